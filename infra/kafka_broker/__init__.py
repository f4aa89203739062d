"""A real, single-node Apache Kafka broker on loopback, without Docker (tests, benchmarks, development).

The broker is Maven Central's ``org.apache.kafka:kafka_2.13`` and its runtime
dependencies, fetched once with Maven (``pom.xml`` beside this file pins the
version) into ``.cache/kafka/<version>/libs``; Maven's own repository
(``~/.m2``) keeps the jars too, so a fresh checkout fetches them in seconds.

``LocalBroker`` formats KRaft storage in a work directory and runs the broker
(``kafka.Kafka``, combined broker+controller, static quorum) on free loopback
ports; ``start`` returns once a metadata round trip succeeds. The broker is a
detached process whose pid and ports are kept in the work directory, so
``python -m chainloom.infra.kafka_broker start|stop --dir DIR`` can manage it from shell
scripts, and a test can stop and restart it on the same ports and data.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parent.parent
POM = HERE / "pom.xml"
LOG_CONFIG = HERE / "log4j2.properties"

# Modest by default: the machine has two cores shared with PostgreSQL and the tests.
DEFAULT_JVM_OPTS = "-Xms64m -Xmx384m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true"


def kafka_version() -> str:
    """The pinned broker version (the one place it is written is ``pom.xml``)."""
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    assert match, "pom.xml has no <kafka.version>"
    return match.group(1)


def default_cache_dir() -> Path:
    return Path(os.environ.get("CHAINLOOM_KAFKA_CACHE", PROJECT_ROOT / ".cache" / "kafka"))


def fetch(cache_dir: Path | None = None) -> Path:
    """The broker's classpath folder, fetched with Maven unless already there."""
    libs = (cache_dir or default_cache_dir()) / kafka_version() / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    if shutil.which("mvn") is None:
        raise BrokerError("Maven (mvn) is needed to fetch the Kafka broker from Maven Central")
    if libs.exists():
        shutil.rmtree(libs)
    libs.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mvn", "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
         f"-DoutputDirectory={libs}", "-DincludeScope=runtime"],
        capture_output=True, text=True,
    )
    if result.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
        raise BrokerError(f"fetching Kafka {kafka_version()} with Maven failed:\n{result.stdout}{result.stderr}")
    marker.write_text(kafka_version() + "\n")
    return libs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BrokerError(RuntimeError):
    pass


class LocalBroker:
    """One broker in ``workdir`` (created if absent); state survives in ``workdir/state.json``."""

    def __init__(self, workdir: Path, libs: Path | None = None, jvm_opts: str | None = None) -> None:
        self.workdir = Path(workdir).resolve()
        self._libs = libs
        self.jvm_opts = jvm_opts or os.environ.get("CHAINLOOM_KAFKA_JVM_OPTS", DEFAULT_JVM_OPTS)
        self.state = self._load_state()

    # -- state ---------------------------------------------------------------

    @property
    def _state_file(self) -> Path:
        return self.workdir / "state.json"

    def _load_state(self) -> dict:
        if self._state_file.exists():
            return json.loads(self._state_file.read_text())
        return {}

    def _save_state(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._state_file.write_text(json.dumps(self.state))

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.state['port']}"

    @property
    def pid(self) -> int | None:
        return self.state.get("pid")

    @property
    def libs(self) -> Path:
        if self._libs is None:
            self._libs = fetch()
        return self._libs

    # -- life cycle ----------------------------------------------------------

    def _java(self, main_class: str, *args: str) -> list[str]:
        return [
            "java", *self.jvm_opts.split(),
            f"-Dlog4j2.configurationFile={LOG_CONFIG}",
            f"-Dkafka.logs.dir={self.workdir / 'logs'}",
            "-cp", f"{self.libs}/*",
            main_class, *args,
        ]

    def _configure(self) -> Path:
        if "port" not in self.state:
            self.state.update(port=free_port(), controller_port=free_port(), cluster_id=None)
        port, controller = self.state["port"], self.state["controller_port"]
        properties = self.workdir / "server.properties"
        properties.write_text(
            "\n".join([
                "process.roles=broker,controller",
                "node.id=1",
                f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                f"controller.quorum.voters=1@127.0.0.1:{controller}",
                f"log.dirs={self.workdir / 'data'}",
                "num.partitions=1",
                # One node: every internal topic has one replica, and few partitions start faster.
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "transaction.state.log.num.partitions=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "num.network.threads=2",
                "num.io.threads=2",
                "",
            ])
        )
        return properties

    def _format(self, properties: Path) -> None:
        if (self.workdir / "data" / "meta.properties").exists():
            return
        self.state["cluster_id"] = self.state.get("cluster_id") or _cluster_id()
        result = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", f"--cluster-id={self.state['cluster_id']}", "-c", str(properties)),
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise BrokerError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")

    def start(self, timeout: float = 90.0) -> str:
        """Start (or restart on the same ports and data) and wait until it serves metadata; returns the bootstrap."""
        if self.running():
            return self.bootstrap
        self.workdir.mkdir(parents=True, exist_ok=True)
        properties = self._configure()
        self._format(properties)
        out = open(self.workdir / "broker.out", "ab")
        process = subprocess.Popen(
            self._java("kafka.Kafka", str(properties)),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        out.close()
        self.state["pid"] = process.pid
        self._save_state()
        self._process = process
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self.bootstrap

    def wait_ready(self, timeout: float) -> None:
        """Wait for the port, then for a metadata round trip that lists this broker."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running():
                raise BrokerError(f"the Kafka broker exited during start-up; see {self.workdir}/broker.out:\n{self._tail()}")
            if _metadata_round_trip(self.bootstrap):
                return
            if time.monotonic() > deadline:
                raise BrokerError(f"the Kafka broker did not get ready within {timeout:g}s:\n{self._tail()}")
            time.sleep(0.2)

    def running(self) -> bool:
        pid = self.pid
        if not pid:
            return False
        process = getattr(self, "_process", None)
        if process is not None and process.pid == pid:
            return process.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # A pid can be reused: make sure it is still our broker.
        try:
            return "kafka.Kafka" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False

    def stop(self, timeout: float = 30.0) -> None:
        """Stop gracefully (SIGTERM: a controlled shutdown), killing it if it takes too long."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Stop at once (SIGKILL), as a crash would."""
        self._signal(signal.SIGKILL, 10.0)

    def _signal(self, sig: int, timeout: float) -> None:
        if not self.running():
            return
        pid = self.pid
        assert pid is not None
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while self.running():
            process = getattr(self, "_process", None)
            if process is not None and process.pid == pid:
                try:
                    process.wait(timeout=0.1)
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(0.1)
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
        self.state.pop("pid", None)
        self._save_state()

    def _tail(self, lines: int = 30) -> str:
        path = self.workdir / "broker.out"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _cluster_id() -> str:
    # What `kafka-storage.sh random-uuid` prints: a UUID in URL-safe base64 without padding —
    # and, like Kafka's own Uuid.randomUuid(), never one starting with "-", which the
    # storage tool's argument parser would take for an option (1 in 64 ids did).
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _metadata_round_trip(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=0.5).close()
    except OSError:
        return False
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    except (KafkaError, OSError, ValueError):
        return False
    try:
        cluster = admin.describe_cluster()
        return bool(cluster.get("brokers"))
    except (KafkaError, OSError, ValueError):
        return False
    finally:
        admin.close()
