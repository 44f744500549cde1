# Set-up, the same in every notebook (its source is colab/setup_cell.py): installs rsd_jax with the JAX build for
# the accelerator JAX finds here (TPU: jax[tpu] with its matching libtpu; GPU: the CUDA 12 build; CPU: the plain
# one), at the versions the project is tested with, then says what it found.
# ┌── THE REPOSITORY: the one place its address is set. From a fork: `python colab/set_repo.py URL` writes it here
# │   and into every notebook (README "Colab notebooks"). RSD_NB_CLONE=/path/to/a/clone installs that clone instead.
REPO_URL = "https://github.com/YOUR-GITHUB-USER/rsd_jax"
# └──
import importlib.metadata, importlib.util, os, subprocess, sys


def jax_platform():
    """The platform the JAX installed now finds ("tpu", "gpu", "cpu"; "none": no JAX), asked in a subprocess so
    that this kernel imports JAX only once the tested build is installed."""
    if importlib.util.find_spec("jax") is None:
        return "none"
    probe = subprocess.run([sys.executable, "-c", "import jax; print(jax.default_backend())"],
                           capture_output=True, text=True)
    return (probe.stdout.split() or ["cpu"])[-1]


def clone_folder():
    """The clone to install: RSD_NB_CLONE's, else REPO_URL cloned into ./rsd_jax (a clear error for the
    placeholder address instead of a failed clone)."""
    if os.environ.get("RSD_NB_CLONE"):
        return os.path.abspath(os.environ["RSD_NB_CLONE"])
    folder = os.path.abspath("rsd_jax")
    if os.path.isdir(os.path.join(folder, "rsd_jax")):
        return folder
    if "YOUR-GITHUB-USER" in REPO_URL:
        raise RuntimeError("REPO_URL is a placeholder: set it to the address of your clone or fork of rsd_jax in "
                           "the first lines of this cell (README 'Colab notebooks')")
    if subprocess.run(["git", "clone", "--depth", "1", REPO_URL, folder]).returncode != 0:
        raise RuntimeError(f"git clone {REPO_URL} failed (see above): check REPO_URL in the first lines of this cell")
    return folder


if os.environ.get("RSD_NB_CLONE") or importlib.util.find_spec("rsd_jax") is None:
    CLONE = clone_folder()
    FOUND = jax_platform()
    EXTRA = {"tpu": "[tpu]", "gpu": "[cuda]"}.get(FOUND, "")
    print(f"JAX here finds: {FOUND}; installing rsd_jax{EXTRA} from {CLONE} (its tested jax)")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-compile", "-e", CLONE + EXTRA], check=True)
    sys.path.insert(0, CLONE)
import rsd_jax
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(rsd_jax.__file__)))
os.chdir(ROOT)
import jax
if jax.__version__ != importlib.metadata.version("jax"):
    print(f"WARNING: this kernel runs jax {jax.__version__}, not the {importlib.metadata.version('jax')} just "
          "installed: restart the session (Runtime > Restart session) and run this cell again")
if globals().get("FOUND") in ("tpu", "gpu") and jax.default_backend() != FOUND:
    print(f"WARNING: JAX found a {FOUND} before the install and finds {jax.default_backend()} now: restart the "
          "session (Runtime > Restart session) and run this cell again")
print(f"rsd_jax {rsd_jax.__version__} from {ROOT}; jax {jax.__version__} finds {rsd_jax.devices_found()}")
