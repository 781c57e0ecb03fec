#!/usr/bin/env python3
"""heap_by_part.py STACKS N — heap bytes per idle connection by part of the
gRPC C core, from a heaptrack peak-memory flame-graph file
(`heaptrack_print -f FILE --flamegraph-cost-type peak -F STACKS`) of a
server holding N idle connections (bench/trace-idle).

A connection's allocations are those made on a poller thread (under
grpc_pollset_work) outside perfc's own request pre-posting; each is put in
the first part below whose pattern its stack contains. Heap bytes are what
was asked of malloc; resident memory differs (an 8 KiB read block is only
resident where it was written), see docs/benchmarks-more.md section 2."""
import collections
import sys

PARTS = [
    ("TCP read buffer (8 KiB block held by the pending read)",
     ["MemoryAllocator::MakeSlice"]),
    ("TCP TX zerocopy send records", ["TcpZerocopySendCtx"]),
    ("channelz socket node", ["channelz::"]),
    ("registered-method table (Server::ChannelData)",
     ["Server::ChannelData::InitTransport"]),
    ("memory-quota owners and reclaimers",
     ["MemoryQuota::CreateMemoryOwner", "MaybeRegisterReclaimer", "ReclaimerQueue"]),
    ("auth context (insecure handshake)", ["check_peer", "grpc_auth_context"]),
    ("chttp2 transport (struct with HPACK state, combiner, stream map)",
     ["grpc_create_chttp2_transport", "grpc_chttp2_"]),
    ("server channel stack (filters)",
     ["ChannelStackBuilderImpl::Build", "Channel::CreateWithBuilder",
      "Channel::Channel", "Channel::Create"]),
    ("TCP endpoint (grpc_tcp, peer name)", ["grpc_tcp_create"]),
    ("fd", ["grpc_fd", "fd_create", "iomgr_register_object"]),
]


def main():
    path, n = sys.argv[1], int(sys.argv[2])
    parts, other = collections.Counter(), collections.Counter()
    for line in open(path):
        line = line.rstrip("\n")
        cut = line.rfind(" ")
        frames = [f for f in line[:cut].split(";") if f and not f.startswith("0x")]
        cost = int(line[cut + 1:])
        stack = ";".join(frames)
        if "grpc_pollset_work" not in stack or "post_request" in stack or "perfc_" in stack:
            continue
        # The zerocopy records are malloc'd by a constructor inlined into
        # grpc_tcp_create: gpr_malloc straight under it.
        if len(frames) >= 2 and frames[-1] == "gpr_malloc" and frames[-2].startswith("grpc_tcp_create"):
            parts["TCP TX zerocopy send records"] += cost
            continue
        for name, patterns in PARTS:
            if any(p in stack for p in patterns):
                parts[name] += cost
                break
        else:
            other[" <- ".join(reversed(frames[-3:]))] += cost
    total = sum(parts.values()) + sum(other.values())
    print("| part | heap bytes per connection |")
    print("|---|---:|")
    for name, _ in PARTS:
        if parts[name]:
            print(f"| {name} | {parts[name] / n:,.0f} |")
    print(f"| other | {sum(other.values()) / n:,.0f} |")
    print(f"| **total** | **{total / n:,.0f}** |")


if __name__ == "__main__":
    main()
