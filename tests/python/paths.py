"""Paths the tests use, relative to the repository root."""

from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
GEN = HERE / "gen"
PROTO_DIR = REPO / "proto"
MODELS_DIR = REPO / "models"
ABI_INCLUDE = REPO / "crates" / "abi" / "include"
C_DIR = REPO / "tests" / "c"
DATA_DIR = REPO / "tests" / "data"
