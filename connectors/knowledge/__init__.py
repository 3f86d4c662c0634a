"""The knowledge layer's connectors: embedding models, vector stores, sources and retrieval.

The contracts are in `connectors/knowledge/protocols.py`; each provider is a module of its own.
"""
