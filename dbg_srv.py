import subprocess, sys, time, contextlib
import httpx
from tests.bench.servers import scratch_servers
from tests.helpers import settings_env
from deploy.servers import free_port
from contract.hours import system_now_ms, HOUR_MS
from tests.integration.valkey_cluster import running_cluster
with scratch_servers() as s, running_cluster(s.workdir / "c2", primaries=2, replicas=0, partitions=12) as c:
    st = s.settings.replace(partitions=12, snapshot_interval_s=0.0, http_port=free_port(), http_workers=1)
    subprocess.run([sys.executable, "-m", "projector", "stream"], env=settings_env(st), check=True)
    for url in (st.redis_url, c.role_url("api")):
        st2 = st.replace(redis_url=url, http_port=free_port())
        p = subprocess.Popen([sys.executable, "-m", "server"], env=settings_env(st2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(6)
        now = system_now_ms()
        for path in ("/analytics?timestamp=0", f"/analytics?from={now-30*24*HOUR_MS}&to={now}&granularity=day"):
            try: r = httpx.get(f"http://127.0.0.1:{st2.http_port}{path}"); print(r.status_code, r.text[:300])
            except Exception as e: print(e)
        p.terminate(); print(p.communicate()[0].decode()[-3000:])
