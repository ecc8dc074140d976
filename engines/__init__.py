"""The engines besides rollout.py's vLLM engine, behind the same interface: the transformers engine (a model
in this process: the CPU's, the tests') and the client of a teacher or judge behind an OpenAI-compatible
server."""
