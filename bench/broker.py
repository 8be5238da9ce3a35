"""The broker's numbers in one run (not a test): ``python bench/broker.py``.

1. first-send added latency p50/p99 with and without the key pool (bench/broker_enrol.py:
   the bundled CA's real HTTPS CMC endpoint on loopback; target p50 <= 100 ms with the pool);
2. recipient lookup hot vs cold (LDAP) vs negative-cached (bench/broker_lookup.py: a real
   slapd on loopback; targets hot <= 50 us, cold <= 5 ms).

Each part prints its own baseline and ratios measured in the same run.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import broker_enrol  # noqa: E402
import broker_lookup  # noqa: E402

if __name__ == "__main__":
    print("== first-send enrolment latency")
    broker_enrol.main()
    print("\n== recipient lookup")
    sys.argv = sys.argv[:1]
    sys.exit(broker_lookup.main())
