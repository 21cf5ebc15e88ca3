"""The API-neutral request path: a decoded `Conversation` through input checks, the upstream and
output checks to a decision, whatever wire API it came by. It never imports `api/` or `server/`.

    flow.py        ChatFlow: input (sequential or parallel), upstream, output (whole or streamed)
    judging.py     the one place a verdict becomes an action (proxy, shadow, playground, eval)
    checks.py      building and running guard checks; decision.py, the tenant's rules
    moderation.py  windowed stream moderation; streams.py, the streamed responses
    codec.py       what a wire API's codec provides; exchange.py, the per-request record
"""
