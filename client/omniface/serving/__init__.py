"""Server-side steps of the omniface pipeline.

``steps`` holds the pipeline steps as plain callables over numpy dicts (tested and
benchmarked without Triton); ``triton_python`` adapts them to Triton's python backend;
``pipeline`` chains them in-process, the baseline the served pipeline is measured against.
"""
