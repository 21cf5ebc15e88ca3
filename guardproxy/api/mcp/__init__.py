"""The Model Context Protocol gateway: MCP's Streamable HTTP transport, every message judged."""
