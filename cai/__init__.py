"""cai: Constitutional AI data generation on vLLM (critique-and-revision SFT data, AI preference labels)."""

__version__ = "0.2.0"
