"""gRPC stubs generated from proto/explaind/v1/explaind.proto by clients/python/generate.py.

Do not edit these files; regenerate them.
"""
