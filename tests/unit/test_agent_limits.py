"""What the agent says about kernel limits where it cannot enforce them, and how a server joins its cgroup and
drops to its user (command lines only: no cgroup or process is touched here)."""

from __future__ import annotations

import os
from pathlib import Path

from services.agent.limits import InstanceCgroup, Limits, detect_cgroups
from services.agent.processes import as_user, join_cgroup


def test_no_controllers_means_not_enforced_with_the_reason(tmp_path: Path) -> None:
    backend, reason = detect_cgroups(fs=tmp_path)
    assert backend is None
    if os.geteuid() == 0:
        assert "no cgroup v2 memory and cpu controllers" in reason
    else:
        assert "does not run as root" in reason


def test_a_server_joins_every_hierarchy_then_drops_to_its_user() -> None:
    group = InstanceCgroup(1, {"memory": Path("/cg/memory/zlh/i"), "cpu": Path("/cg/cpu/zlh/i")})
    argv = join_cgroup(group, as_user((1234, 1235), ["node", "x.js"]))
    assert argv[:3] == ["/bin/sh", "-c", 'echo $$ > "$1" && echo $$ > "$2" && shift 2 && exec "$@"']
    assert argv[4:6] == ["/cg/cpu/zlh/i/cgroup.procs", "/cg/memory/zlh/i/cgroup.procs"]
    assert argv[6:] == ["setpriv", "--reuid=1234", "--regid=1235", "--clear-groups", "--no-new-privs", "--",
                        "node", "x.js"]
    assert Limits(64, 0.5, 100).as_dict() == {"memory_mb": 64, "cpus": 0.5, "disk_bytes": 100}
