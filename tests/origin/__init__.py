"""The local stand-in for chatgpt.com and the OpenAI API, and a scripted client session."""
