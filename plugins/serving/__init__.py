"""Using a trained run elsewhere: the OpenAI-compatible server, export, inference manifests, the HTTP client."""
