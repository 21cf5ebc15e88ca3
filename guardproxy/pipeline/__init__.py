"""The API-neutral request path: a decoded `Conversation` through input checks, the upstream and
output checks to a decision, whatever wire API it came by. It never imports `api/` or `server/`.

    flow.py        ChatFlow: input (sequential or parallel), upstream, the whole answer
    streamed.py    a streamed answer: relayed, moderated window by window, or buffered
    enforce.py     a ruling carried out on the exchange (monitor, flag, fail, block)
    judging.py     the one place a verdict becomes an action (flow, shadow, playground, eval)
    checks.py      building and running guard checks; decision.py, the tenant's rules
    answers.py     every string of an answer judged; moderation.py, the stream's windows
    codec.py       what a wire API's codec provides; exchange.py, the per-request record
    replies.py     the one exception-to-status table, and the block shapes' choice
"""
