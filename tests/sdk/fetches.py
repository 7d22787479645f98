"""Counts credential fetches at the service, from its audit log.

Every answer the service gives (the HTTP container-credentials endpoint, or gRPC
AssumeScoped behind the credentials proxy) writes one `grant issued` audit event (a
JSON object on its own line), and every new STS session one `AssumeRole issued scoped
credentials` log line. Counting those
lines for one caller and prefix is counting the SDK's fetches at the endpoint, and
the credential sets the service minted for them.

Also usable from the shell: python3 fetches.py LOG CALLER PREFIX  ->  "FETCHES SESSIONS"
"""

import json
import sys


def count(log_path, caller, prefix):
    """(fetches answered with credentials, STS sessions created) for CALLER under PREFIX."""
    fetches = sessions = 0
    with open(log_path, encoding="utf-8", errors="replace") as log:
        for line in log:
            if line.startswith("{"):
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if (
                    event.get("target") == "audit"
                    and event.get("message") == "grant issued"
                    and event.get("caller") == caller
                    and event.get("scope") == prefix
                    and str(event.get("action", "")).startswith("assume-")
                ):
                    fetches += 1
            elif (
                "AssumeRole issued scoped credentials" in line
                and f"caller={caller} " in line
                and f"prefix={prefix} " in line
            ):
                sessions += 1
    return fetches, sessions


if __name__ == "__main__":
    print(*count(*sys.argv[1:4]))
