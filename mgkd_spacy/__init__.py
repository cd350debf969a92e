"""mgkd-spacy: multi-grained knowledge distillation for named-entity recognition in spaCy."""
__version__ = "0.1.0"
