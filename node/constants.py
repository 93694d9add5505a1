"""Protocol parameters and limits, in one place, each with its unit in the name."""

from __future__ import annotations

# Kademlia
ID_BITS = 256
ID_BYTES = ID_BITS // 8
K = 20  # bucket size and replication factor
ALPHA = 3  # lookup parallelism
REPLACEMENT_CACHE_SIZE = K  # per-bucket candidates kept while a bucket is full
BUCKET_REFRESH_S = 600.0  # a bucket without lookups for this long is refreshed
CONTACT_FAILURES_BEFORE_EVICT = 1  # unanswered requests before a contact leaves its bucket
FIND_VALUE_QUORUM = 3  # a FIND_VALUE lookup stops after this many nodes returned records
# A contact heard from again this soon is not moved in its bucket again: a lookup's answers and a
# busy peer's requests would otherwise redo the same table update on every message.
ROUTING_SEEN_INTERVAL_S = 1.0
MAX_SEEN_CONTACTS = 4096  # contacts remembered for that; the memory starts over when it is full
MAINTENANCE_INTERVAL_S = 1.0  # how often a node expires records, republishes and refreshes

# Routing table diversity (libp2p kad-dht's peer diversity filter, S/Kademlia): ids are free to
# mint, addresses are not, so one host or network cannot fill a table with identities. Public
# addresses count per address and per subnet, private ones per address, loopback not at all
# (a local cluster shares 127.0.0.1); see node/diversity.py.
MAX_CONTACTS_PER_ADDRESS_PER_BUCKET = 2  # a host runs one node, two behind a shared NAT
MAX_CONTACTS_PER_ADDRESS_PER_TABLE = 4  # a few NAT neighbours, not 30 identities of one host
MAX_CONTACTS_PER_SUBNET_PER_BUCKET = 3  # one operator's block seldom holds more honest nodes
MAX_CONTACTS_PER_SUBNET_PER_TABLE = 8  # so 20 fake identities in one /24 leave most of a table honest
SUBNET_V4_PREFIX_BITS = 24  # the block one operator usually holds
SUBNET_V6_PREFIX_BITS = 48  # the usual site allocation

# Dialling: dead contacts must not stall a join or a lookup.
# A lookup or an address check waits this long for a handshake: aioquic resends its first
# packet after 0.2, 0.4 and 0.8 s, so four tries fit, at well under CONNECT_TIMEOUT_S.
LOOKUP_DIAL_TIMEOUT_S = 2.0
DIAL_FAILURE_MEMORY_S = 60.0  # a contact that failed is skipped by lookups for this long
MAX_REMEMBERED_FAILURES = 4096  # addresses kept in that memory; a flood of fakes forgets the oldest
MAX_PENDING_VERIFICATIONS = 16  # claimed addresses PINGed at once before a contact enters the table

# Records
RECORD_TTL_S = 300.0  # provider records expire after this
REPUBLISH_MARGIN_S = 60.0  # providers republish this long before expiry
MAX_RECORD_TTL_S = 3600.0  # a record claiming to live longer is refused
# A node keeps a record at most this long from its arrival; a longer TTL is clamped (the STORE
# result says so), so squatters cannot hold slots for an hour. Twice RECORD_TTL_S: an honest
# publisher republishes well within it.
MAX_KEPT_TTL_S = 600.0
MAX_CLOCK_SKEW_S = 30.0  # tolerated difference between clocks of peers
MAX_RECORDS_PER_KEY = 64  # providers kept per service
MAX_RECORDS_PER_PEER = 256  # records one publisher may hold on one node
MAX_RECORDS_TOTAL = 100_000  # records one node stores in all
# Records one network (subnet if public, address if private; loopback exempt) may hold under
# one key: 64 identities from one place cannot monopolise a service.
MAX_RECORDS_PER_NETWORK_PER_KEY = 8
# STORE rate per connection (token bucket, in records): an honest provider stores a handful of
# records every few minutes; one connection cannot fill the store in a minute.
STORE_RECORDS_PER_S = 10.0
STORE_BURST_RECORDS = 64  # a whole STORE of MAX_RECORDS_PER_MESSAGE records at once
MAX_VALUE_BYTES = 1024  # a record's value (an endpoint)
# Records whose signature a node remembers having checked (about 0.5 KB each): every lookup of a
# service meets the same few records again, and an Ed25519 check costs about 60 us.
MAX_VERIFIED_RECORDS = 4096
MAX_SERVICE_NAME_BYTES = 256
# With a data dir, changes are committed at most this far apart: a crash loses at most the last
# second of writes, with room for a slow commit.
PERSIST_COMMIT_INTERVAL_S = 0.5
MAX_KEY_FILE_BYTES = 16 * 1024  # an Ed25519 PEM is about 120 bytes; --key /dev/zero reads no more

# Wire and transport
ALPN = "dhtscope/1"
WIRE_VERSION = 2  # 2: contacts packed as id + IP address + port
MAX_MESSAGE_BYTES = 256 * 1024  # one request or response on one stream
MAX_CONTACTS_PER_MESSAGE = 2 * K
MAX_RECORDS_PER_MESSAGE = MAX_RECORDS_PER_KEY
REQUEST_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 5.0
STREAM_CREDIT_WAIT_S = 30.0  # a request waits this long for the peer's stream credit
MAX_CONNECTIONS = 1024  # open QUIC connections, both directions together (about 45 KiB each when idle)
IDLE_TIMEOUT_S = 60.0
# Concurrent request streams a peer may open on one connection. aioquic grants 128 and
# returns a slot only once both FINs are acknowledged and its batched MAX_STREAMS frame
# arrives, so 128 requests in flight on one connection spent most of their time waiting.
MAX_STREAMS_PER_CONNECTION = 512
# How long an ACK may wait for a packet of ours to ride on (QUIC's default max_ack_delay is
# 25 ms; aioquic waits 1 ms). Applied once the handshake is done.
ACK_DELAY_S = 0.020
# Largest UDP payload a node sends: QUIC's 1,200, which every path must carry, so a tunnel
# with a small MTU never black-holes the handshake. `--max-datagram-bytes 1350` (what
# Chrome's QUIC sends) packs more answers per datagram when many are written at once:
# about a tenth more RPCs/s at 16 in flight, no gain for lookups (BENCHMARKS.md).
MIN_DATAGRAM_BYTES = 1200
MAX_DATAGRAM_BYTES = MIN_DATAGRAM_BYTES
MAX_UDP_PAYLOAD_BYTES = 65527  # QUIC's largest max_udp_payload_size
# The node's UDP socket receive buffer. Linux's default (208 KiB) overflows while thousands of
# handshakes or PINGs arrive at once: one node holding 10,000 connections lost about 1% of its
# PINGs with it and none with 4 MiB. The kernel caps the request at net.core.rmem_max.
UDP_RECEIVE_BUFFER_BYTES = 4 * 2**20
# Connection ids a peer may issue us at once (QUIC's active_connection_id_limit): 2, the least
# QUIC allows, not aioquic's 8. A node never migrates, and each id costs memory at both ends.
ACTIVE_CONNECTION_IDS = 2

# Admission: who gets a connection slot (node/admission.py). Loopback peers are exempt from the
# per-address and per-subnet limits: every node of a local cluster shares 127.0.0.1.
MAX_HALF_OPEN_CONNECTIONS = 256  # inbound connections still in their handshake; more are refused
# Above this many half-open connections an Initial without our token gets a Retry first, so
# a flood of Initials from addresses that never answer costs one small packet each, no state.
RETRY_ABOVE_HALF_OPEN = 32
RETRY_TOKEN_LIFETIME_S = 10.0  # a Retry token comes back one round trip later (RFC 9000 8.1.4)
HANDSHAKE_TIMEOUT_S = 5.0  # an inbound handshake not done by then is dropped (as long as our dials wait)
MAX_HALF_OPEN_PER_ADDRESS = 8  # handshakes one address may have in progress
MAX_CONNECTIONS_PER_ADDRESS = 32  # one host, or many behind one NAT
MAX_CONNECTIONS_PER_SUBNET = 128  # one /24 (IPv4) or /48 (IPv6): what one operator usually holds
IDLE_EVICTION_MIN_S = 1.0  # a connection idle this long may be closed, least recently used first, for a newcomer
REFUSALS_PER_S = 50.0  # CONNECTION_CLOSE answers to refused Initials; beyond, refusals go unanswered
REFUSAL_BURST = 50
RETRIES_PER_S = 5000.0  # Retry packets: smaller than the Initial they answer, but each costs a MAC
RETRY_BURST = 2000
LOG_INTERVAL_S = 10.0  # one log line per kind of refusal per interval, with the count since the last

# Memory: per connection and per node (node/rpc.py). Per-connection figures leave room for
# one largest message; the node-wide budget sheds new work before RSS reaches 256 MiB.
MAX_INBOUND_BUFFERED_BYTES_PER_CONNECTION = 2 * MAX_MESSAGE_BYTES + 64 * 1024  # unfinished requests' bytes
REQUEST_ARRIVAL_DEADLINE_S = 10.0  # a request must arrive whole this long after its first byte (slowloris)
# Answers written and not yet acknowledged by the peer: 25 full FIND_VALUE answers. A peer
# that never reads has its oldest unread answers reset once this is reached.
MAX_UNREAD_ANSWER_BYTES_PER_CONNECTION = 2 * 1024 * 1024
# Requests one connection may have refused for the limits above (bytes, deadline, unread
# answers) before it is closed: each refusal costs frames both ways, and a peer that keeps
# earning them (a slowloris, a reader of nothing) would otherwise cost one per stream it opens.
MAX_REFUSALS_PER_CONNECTION = 64
# What one connection is counted as against the node's memory budget: 43-45 KiB of aioquic and
# TLS state when idle (bench/conns_bench.py), with room for the streams it carries.
CONNECTION_COST_BYTES = 80 * 1024
# Everything above, summed over the node: past it new requests are answered OVERLOADED (a PING,
# whose answer is smaller than the error, is still answered) and new connections refused.
NODE_MEMORY_BUDGET_BYTES = 160 * 1024 * 1024
SLOW_REQUEST_SWEEP_S = 1.0  # how often unfinished requests are checked against their deadline
