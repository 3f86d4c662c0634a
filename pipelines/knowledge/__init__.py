"""The knowledge base's services: ingesting sources into the store and publishing releases."""
