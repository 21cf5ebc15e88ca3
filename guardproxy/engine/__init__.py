"""Embedded guard engines: a vLLM OpenAI server that `guardproxy serve` starts, watches and
stops itself, so one command gives a working guard proxy on one machine."""
