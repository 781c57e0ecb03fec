"""budgets.py — the bound every adversarial probe asserts (issue #13).

Room: tests/adversarial. Two tables and nothing else:

- BUDGETS: the strict bound of each probe, the target issue #13 names.
  Every transport is held to it unless KNOWN says otherwise.
- KNOWN: per transport, the probes it cannot meet yet, each with a bound
  it does meet (what it measured, with margin) and the reason. A probe
  listed here still fails when the transport gets worse than that bound;
  delete the row when a fix lands and the strict bound holds.

How a bound reads: a number is an upper bound (value <= bound); a set is
the allowed values (a status code name, an HTTP status, an outcome).

Units: *_mib MiB of resident memory above the server's baseline (VmRSS
after start and a warm-up call; peaks from VmHWM, reset after the
warm-up); *_kib the same in KiB; cpu_s seconds of server CPU (utime +
stime) during the attack; *_failed / *_open / *_leaked counts; log_* lines
and bytes the server wrote to stderr during the attack.
"""

# The server's transport when no --transport / PERFC_ADV_TRANSPORT is
# given: perfc's nghttp2 transport, the library's default since issue #15
# (CTest's `.core` copies attack the C core under its KNOWN rows).
DEFAULT_TRANSPORT = "h2"

# The server's max receive message size when the suite passes no flag
# (PERFC_DEFAULT_MAX_RECV_MESSAGE_BYTES).
MAX_RECV_BYTES = 4 << 20

MIB = 1 << 20

# What refusing a request may look like on the wire.
REFUSED = {"goaway", "rst", "closed", "RESOURCE_EXHAUSTED", "http 431"}

BUDGETS = {
    # 1. Three ~1 MiB gzip bombs at once: each call may hold its compressed
    # message and at most the limit inflated (3 x (1 + 4) MiB) plus 16 MiB
    # of slack for the allocator and the bystander's calls; inflating 4 MiB
    # three times costs milliseconds, 1 s leaves room for a loaded machine.
    "bomb": {"code": {"RESOURCE_EXHAUSTED"}, "peak_mib": 32, "cpu_s": 1.0,
             "after_close_mib": 16, "bystander_failed": 0},
    # 2. Rapid reset: a reset stream must cost nothing that outlives it.
    # 64 MiB is a few MiB per in-flight batch on a 1024-stream connection;
    # after the attacker leaves, memory goes back.
    # kib_per_stream: the peak over the streams sent (a faster client
    # sends more), so a transport's cost per reset stream is comparable
    # across machines.
    "rapid_reset": {"peak_mib": 64, "kib_per_stream": 1, "after_close_mib": 16,
                    "bystander_failed": 0},
    # 3. Unfinished 4 MB messages on many streams: a server-wide budget for
    # buffered request bytes, enforced through flow control. 256 MiB is the
    # most one client may make the server hold (the fast variant offers
    # 512 MB, the heavy one 2 GB); all of it is returned after close.
    "no_budget": {"peak_mib": 256, "after_close_mib": 32,
                  "bystander_failed": 0},
    # 4. A 16 MB header block from a client that never ACKs SETTINGS: the
    # header list limit applies from the first byte; refusing costs little.
    "header_flood": {"outcome_literal": REFUSED, "outcome_indexed": REFUSED,
                     "cpu_s": 0.5, "peak_mib": 32, "bystander_failed": 0},
    # 10. 129 unfinished GET /metrics from another address: every scrape
    # during the hold and after it is answered.
    "metrics_lockout": {"scrapes_failed_during": 0, "scrapes_failed_after": 0},
    # 11. 5,000 requests with an invalid grpc-timeout: the server's log
    # stays bounded (rate-limited, values cut) and every call is answered.
    "log_flood": {"log_lines": 50, "log_bytes": 16384, "unanswered": 0},
    # 12. Framing violations get gRPC's codes, not silence.
    "framing": {"code_short_body": {"INTERNAL"},
                "code_flag_without_encoding": {"INTERNAL"},
                "code_unknown_flag": {"INTERNAL"},
                "code_unsupported_encoding": {"UNIMPLEMENTED"},
                "code_second_message": {"INTERNAL"},
                "bystander_failed": 0},
    # Half-sent prefaces and header frames on the gRPC port: others are
    # served, a held connection costs at most 64 KiB, the server does not
    # spin, and every fd comes back.
    "slowloris": {"kib_per_conn": 64, "cpu_s": 0.5, "bystander_failed": 0,
                  "after_close_mib": 16, "fds_leaked": 0},
    # Idle HTTP/2 connections (handshake done): bounded memory each (the
    # core measured 18 KB in make soak), all returned.
    "idle_conns": {"kib_per_conn": 32, "after_close_mib": 16, "fds_leaked": 0,
                   "bystander_failed": 0},
    # A message declaring 64 MiB (limit 4 MiB): refused without reading it
    # into memory (limit + 8 MiB slack); one of limit + 1 bytes, sent whole,
    # refused too.
    "oversized": {"code_declared_64mib": {"RESOURCE_EXHAUSTED"},
                  "code_limit_plus_one": {"RESOURCE_EXHAUSTED"},
                  "peak_mib": MAX_RECV_BYTES / MIB + 8, "bystander_failed": 0},
    "unknown_method": {"code_unknown_method": {"UNIMPLEMENTED"},
                       "code_unknown_service": {"UNIMPLEMENTED"},
                       "http_unknown_method": {"200"}},
    # gRPC over HTTP2: a content-type not starting with application/grpc
    # SHOULD get HTTP 415; application/grpc+proto is gRPC.
    "content_type": {"http_text_plain": {"415"}, "http_missing": {"415"},
                     "code_grpc_proto": {"OK"}},
    # Protocol errors after the preface close the connection (GOAWAY or
    # EOF within 3 s) and harm nobody else.
    "garbage": {"variants_open": 0, "alive": {True}, "bystander_failed": 0},
}

# transport -> probe -> (bounds that replace the strict ones, why).
# Measured on main bc41a0a, RelWithDebInfo, 2-core VM (tests/adversarial/
# README.md has the numbers); margins are about 1.5x.
PENDING = "pending fix on core (issue #13 item %s); see docs/reliability.md"
CORE = "C core behaviour (issue #13 %s); see docs/reliability.md"
KNOWN = {
    "core": {
        "rapid_reset": ({"peak_mib": 4096, "kib_per_stream": 32,
                         "after_close_mib": 4096, "bystander_failed": 30}, CORE % "item 2"),
        # One server-wide grpc_resource_quota (server.memory_budget, default
        # 1 GiB) and no per-connection budget: a single client may fill
        # the whole budget (the fast variant offers 512 MB, all accepted).
        # glibc keeps the freed pages.
        "no_budget": ({"peak_mib": 1100, "after_close_mib": 1100}, CORE % "item 3"),
        "no_budget:heavy": ({"peak_mib": 1300, "after_close_mib": 1300}, CORE % "item 3"),
        # The core accepts the flood and spends seconds of CPU on it, on
        # the pollers the bystander's calls share: under TSan (several
        # times slower) 2 of 387 bystander calls missed their deadline.
        "header_flood": ({"outcome_literal": REFUSED | {"accepted"},
                          "outcome_indexed": REFUSED | {"accepted"},
                          "cpu_s": 1.5, "peak_mib": 1000,
                          "bystander_failed": 5}, CORE % "item 4"),
        "header_flood:heavy": ({"cpu_s": 6, "peak_mib": 3900}, CORE % "item 4"),
        # The core drops a grpc-encoding it does not know before perfc sees
        # the headers (so an unsupported encoding looks like none: INTERNAL),
        # hands over a message with an unknown flag byte as if it were
        # uncompressed, and reading a second message on a unary call costs
        # one more receive operation per call (not taken; issue #13 item 12).
        "framing": ({"code_unknown_flag": {"INTERNAL", "OK"},
                     "code_unsupported_encoding": {"UNIMPLEMENTED", "INTERNAL"},
                     "code_second_message": {"INTERNAL", "OK"}}, CORE % "item 12"),
        "content_type": ({"http_text_plain": {"415", "200"},
                          "http_missing": {"415", "200"}}, CORE % "content-type"),
        # glibc keeps what 1000 / 4000 connections freed (12.8 / 51.2 MiB).
        "idle_conns": ({"after_close_mib": 24}, CORE % "idle connections"),
        "idle_conns:heavy": ({"after_close_mib": 80}, CORE % "idle connections"),
        # DATA on stream 0 and a client HEADERS on an even stream id.
        "garbage": ({"variants_open": 2}, CORE % "malformed frames"),
        "oversized": ({"code_declared_64mib": {"RESOURCE_EXHAUSTED", "none"},
                       "peak_mib": 24}, CORE % "oversized message"),
    },
}


def bound(transport, probe, key, heavy=False):
    """(bound, reason): the bound of `key` for `probe` on `transport`, and
    the KNOWN reason when it is a relaxed one (None when strict). A KNOWN
    row named "probe:heavy" applies to the --heavy variant before the
    plain "probe" row."""
    rows = KNOWN.get(transport, {})
    for name in ((probe + ":heavy", probe) if heavy else (probe,)):
        row = rows.get(name)
        if row is not None and key in row[0]:
            return row[0][key], row[1]
    return BUDGETS[probe][key], None
