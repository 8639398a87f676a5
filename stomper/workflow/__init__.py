"""The LangGraph workflow: fan the units out in waves, work each, gather the results."""
