"""Stand-ins for the LLM providers: small local servers speaking their real wire protocols (``llm.py``)."""
