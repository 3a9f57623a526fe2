"""ONNX export of ``OmniFaceNet`` (needs the ``train`` extra): the detector and
attributes graphs with the contract's tensor names, a contract check and a parity
check against PyTorch."""

from .onnx import (
    OPSET,
    AttributesGraph,
    DetectorGraph,
    benchmark,
    check_against_contract,
    export_all,
    export_graph,
    graph_for,
    parity,
    parity_report,
)

__all__ = [
    "OPSET",
    "AttributesGraph",
    "DetectorGraph",
    "benchmark",
    "check_against_contract",
    "export_all",
    "export_graph",
    "graph_for",
    "parity",
    "parity_report",
]
