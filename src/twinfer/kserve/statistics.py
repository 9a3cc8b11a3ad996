"""Triton's statistics extension, read the same way by HTTP and gRPC: this process's counters, or under
`--workers N` every worker's summed (twinfer.server.worker_peers says why and how)."""

from __future__ import annotations

from typing import Any

from tritonclient.grpc import service_pb2 as pb
from twisted.internet.defer import Deferred, succeed

from twinfer.inference.facade import InferenceFacade
from twinfer.inference.model_version import ModelVersion
from twinfer.kserve import messages
from twinfer.server.worker_peers import WorkerPeers


class StatisticsReader:
    def __init__(self, facade: InferenceFacade, peers: WorkerPeers | None = None) -> None:
        self._facade = facade
        self.peers = peers

    def read(self, name: str | None, version: str | None) -> Deferred[list[pb.ModelStatistics]]:
        """One model's serving versions (all models' when name is empty); an unknown model or version raises the
        facade's typed error at once, before any sibling is asked."""
        versions = self._facade.versions_for_statistics(name, version)
        answers = self.peers.ask_all("stats") if self.peers is not None else succeed([])
        return answers.addCallback(self._summed, versions)

    def answer(self) -> dict[str, Any]:
        """This worker's counters for a sibling that was asked: every serving version of every model."""
        return {"versions": [[v.name, v.version, v.stats.to_json()]
                             for v in self._facade.versions_for_statistics(None, None)]}

    @staticmethod
    def _summed(answers: list[tuple[int, Any]], versions: list[ModelVersion]) -> list[pb.ModelStatistics]:
        theirs: dict[tuple[str, int], list[dict]] = {}
        for _, answer in answers:
            for name, number, stats in answer.get("versions", ()):
                theirs.setdefault((name, int(number)), []).append(stats)
        out = []
        for v in versions:  # a version only a sibling serves (mid-reload) is left out, as a version this one lacks
            mine = theirs.get((v.name, v.version))
            total = v.stats
            if mine:  # summed into a copy: the live counters stay this worker's
                total = total.copy()
                for stats in mine:
                    total.add(stats)
            out.append(messages.model_statistics(v.name, v.version, total))
        return out
