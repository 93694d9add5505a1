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
MAINTENANCE_INTERVAL_S = 1.0  # how often a node expires records, republishes and refreshes

# Records
RECORD_TTL_S = 300.0  # provider records expire after this
REPUBLISH_MARGIN_S = 60.0  # providers republish this long before expiry
MAX_RECORD_TTL_S = 3600.0  # a record claiming to live longer is refused
MAX_CLOCK_SKEW_S = 30.0  # tolerated difference between clocks of peers
MAX_RECORDS_PER_KEY = 64  # providers kept per service
MAX_RECORDS_PER_PEER = 256  # records one publisher may hold on one node
MAX_RECORDS_TOTAL = 100_000  # records one node stores in all
MAX_VALUE_BYTES = 1024  # a record's value (an endpoint)
MAX_SERVICE_NAME_BYTES = 256

# Wire and transport
ALPN = "dhtscope/1"
WIRE_VERSION = 2  # 2: contacts packed as id + IP address + port
MAX_MESSAGE_BYTES = 256 * 1024  # one request or response on one stream
MAX_CONTACTS_PER_MESSAGE = 2 * K
MAX_RECORDS_PER_MESSAGE = MAX_RECORDS_PER_KEY
REQUEST_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 5.0
STREAM_CREDIT_WAIT_S = 30.0  # a request waits this long for the peer's stream credit
MAX_CONNECTIONS = 1024  # open QUIC connections, both directions together
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
