"""What a failed HTTP request means, in words a user can act on: ``ConnectionError`` alone does not say
whether the name did not resolve, nothing listened, or the network is down."""
from __future__ import annotations

import requests

# Words in the exception chain, and what they mean (the first that matches; checked in this order).
CAUSES = (
    (("name or service not known", "temporary failure in name resolution", "nodename nor servname",
      "no address associated with hostname", "failed to resolve", "nameresolutionerror", "getaddrinfo failed"),
     "DNS: the host name does not resolve"),
    (("connection refused",), "connection refused"),
    (("network is unreachable", "no route to host"), "network unreachable"),
    (("certificate", "ssl"), "TLS/certificate error"),
    (("connection reset", "remotedisconnected", "connection aborted", "broken pipe"), "connection dropped"),
)

# Causes that prove the request never reached a server (so an order in it was never placed).
NEVER_CONNECTED = ("(DNS: the host name does not resolve)", "(connection refused)")


def network_cause(e: BaseException) -> str:
    """``ConnectionError (DNS: the host name does not resolve)``, ``ReadTimeout``, ...: the exception's type,
    with the cause found in its chain when there is one. Never the URL (its path may hold a token)."""
    name = type(e).__name__
    if isinstance(e, requests.Timeout):
        return f"{name} (no answer in time)"
    texts = []
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        texts.append(f"{type(cur).__name__} {cur}".lower())
        for arg in getattr(cur, "args", ()):
            if isinstance(arg, BaseException):
                texts.append(f"{type(arg).__name__} {arg}".lower())
                reason = getattr(arg, "reason", None)
                if isinstance(reason, BaseException):
                    texts.append(f"{type(reason).__name__} {reason}".lower())
        cur = cur.__cause__ or cur.__context__
    text = " ".join(texts)
    for needles, phrase in CAUSES:
        if any(n in text for n in needles):
            return f"{name} ({phrase})"
    return name
