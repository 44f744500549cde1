"""Training the embedded models with optax: the LM loss, the PRM loss, and a resumable loop."""
