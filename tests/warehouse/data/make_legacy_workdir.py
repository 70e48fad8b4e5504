"""Makes tests/warehouse/data/legacy-workdir.tar.gz: run against the last pre-Iceberg commit
(a0933c4) in a worktree whose spendstream/ links warehouse, stream, producers and alerts, e.g.
``python make_legacy_workdir.py /tmp/legacy-wd`` then ``tar czf ... -C /tmp/legacy-wd warehouse``.
"""
import sys

sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower() and '__editable__' not in type(f).__module__]
sys.path.insert(0, '/tmp/oldwt')
import spendstream

assert spendstream.__file__.startswith('/tmp/oldwt'), spendstream.__file__
from datetime import timedelta
from pathlib import Path

from spendstream.warehouse import Warehouse
from tests.warehouse.factories import T0, alert, breaker, dead_letter, fact

out = Path(sys.argv[1])
wh = Warehouse(out, writer='embedded'); wh.ensure_views()
wh.commit(facts=[fact(T0 + timedelta(hours=i*7), team="search") for i in range(6)], alerts=[alert()], breaker_events=[breaker()], dead_letters=[dead_letter()], state={'engine': 1}, source_positions={'spendstream.usage/0': 41})
wh.commit(facts=[fact(T0, cost=None, team="ads")], state={'engine': 2}, source_positions={'spendstream.usage/0': 42})
wh.compact(grace_s=0, activate_after_s=0)
wh.commit(facts=[fact(T0 + timedelta(days=3))])
w2 = Warehouse(out, writer='usage/1'); w2.commit(state={'engine': 'b'}, source_positions={'spendstream.usage/1': 7}); w2.close()
p = out / 'rev.csv'; p.write_text('month,plan,revenue_usd\n2026-03,pro,1200.50\n')
from spendstream.warehouse.revenue import load_revenue

load_revenue(wh.layout, p); p.unlink()
wh.close()
import os

os.remove(out / 'warehouse' / 'spendstream.duckdb')
print(sorted(str(x.relative_to(out)) for x in out.rglob('*')))
