"""Where knowledge comes from: one module per kind of source, each yielding `KnowledgeDocument`s."""
