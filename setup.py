"""The compiled parts: the WAT record framing and scan of ingestion (metaclip_tasks/ingest/_watscan.c) and
its gzip members inflated by libdeflate (metaclip_tasks/ingest/_inflate.c), the pair uids' sha224
(metaclip_tasks/ingest/_uids.c, OpenSSL's libcrypto) and the token engine of matching
(metaclip_tasks/curation/_match.c); the rest of the project's metadata is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("metaclip_tasks.ingest._watscan", ["metaclip_tasks/ingest/_watscan.c"], extra_compile_args=["-O2"]),
        Extension("metaclip_tasks.ingest._inflate", ["metaclip_tasks/ingest/_inflate.c"], extra_compile_args=["-O2"], libraries=["deflate"]),
        Extension("metaclip_tasks.ingest._uids", ["metaclip_tasks/ingest/_uids.c"], extra_compile_args=["-O2"], libraries=["crypto"]),
        Extension("metaclip_tasks.curation._match", ["metaclip_tasks/curation/_match.c"], extra_compile_args=["-O2"]),
    ]
)
