#!/usr/bin/env python3
"""A small OTLP/gRPC trace receiver for tests, built on the protocol's official Python
bindings (opentelemetry-proto) and grpcio: it accepts
opentelemetry.proto.collector.trace.v1.TraceService/Export on 127.0.0.1:PORT and
appends every span it receives to OUT_FILE, one JSON object per line, with the
resource's attributes and the span's ids in hex, as a collector would see them.

Prints "listening on 127.0.0.1:PORT" once it accepts calls (PORT 0 picks a free port,
and the line names it); stops on SIGTERM/SIGINT.

Usage: scripts/otlp-receiver.py PORT OUT_FILE
"""

import json
import signal
import sys
import threading
from concurrent import futures

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def attributes(kvs):
    """OTLP key-values as a plain dict, each value of its own type: a string, an int
    (OTLP's JSON mapping writes 64-bit integers as strings; this keeps them numbers,
    so that a number exported as text shows), a bool or a double."""
    out = {}
    for kv in kvs:
        kind = kv.value.WhichOneof("value")
        if kind == "int_value":
            out[kv.key] = kv.value.int_value
        else:
            value = json_format.MessageToDict(kv.value)
            out[kv.key] = next(iter(value.values()), None)
    return out


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, path):
        self.lock = threading.Lock()
        self.path = path

    def Export(self, request, context):
        lines = []
        for rs in request.resource_spans:
            resource = attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    lines.append(json.dumps({
                        "resource": resource,
                        "scope": ss.scope.name,
                        "name": span.name,
                        "kind": span.kind,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "attributes": attributes(span.attributes),
                        "events": [
                            {"name": e.name, "attributes": attributes(e.attributes)}
                            for e in span.events
                        ],
                        "status": json_format.MessageToDict(span.status),
                    }, sort_keys=True))
        with self.lock, open(self.path, "a", encoding="utf-8") as out:
            for line in lines:
                out.write(line + "\n")
        return trace_service_pb2.ExportTraceServiceResponse()


def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(path), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    if bound == 0 or (port != 0 and bound != port):
        print(f"cannot listen on 127.0.0.1:{port}", file=sys.stderr)
        return 1
    server.start()
    print(f"listening on 127.0.0.1:{bound}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=1).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
