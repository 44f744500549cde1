"""Data: the synthetic arithmetic task of the embedded default, its tokenizer, and the paper's datasets."""
