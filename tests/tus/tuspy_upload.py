"""PyPI tuspy uploads FILE to a tus ENDPOINT in 256 KiB chunks.

Usage: python3 tuspy_upload.py ENDPOINT FILE   (FERRY_TOKEN: bearer token)
Prints {"url": ...} when done.
"""
import json
import os
import sys

from tusclient import client

endpoint, path = sys.argv[1], sys.argv[2]
headers = {}
if os.environ.get("FERRY_TOKEN"):
    headers["Authorization"] = "Bearer " + os.environ["FERRY_TOKEN"]
tus = client.TusClient(endpoint, headers=headers)
uploader = tus.uploader(
    path,
    chunk_size=256 * 1024,
    metadata={"filename": os.path.basename(path), "filetype": "application/octet-stream"},
)
uploader.upload()
print(json.dumps({"url": uploader.url}))
