"""Counts credential fetches at the service, from its audit log.

Every answer the service gives (the HTTP container-credentials endpoint, or gRPC
AssumeScoped behind the credentials proxy) writes one `grant issued` audit line, and
every new STS session one `AssumeRole issued scoped credentials` line. Counting those
lines for one caller and prefix is counting the SDK's fetches at the endpoint, and
the credential sets the service minted for them.

Also usable from the shell: python3 fetches.py LOG CALLER PREFIX  ->  "FETCHES SESSIONS"
"""

import sys


def count(log_path, caller, prefix):
    """(fetches answered with credentials, STS sessions created) for CALLER under PREFIX."""
    fetches = sessions = 0
    with open(log_path, encoding="utf-8", errors="replace") as log:
        for line in log:
            if (
                "grant issued" in line
                and f'caller="{caller}"' in line
                and f'scope="{prefix}"' in line
                and "action=assume-" in line
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
