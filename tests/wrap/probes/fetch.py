"""GETs each URL with urllib, requests or httpx (argv[1]) and their defaults; "STATUS BODY"."""
import sys

library, urls = sys.argv[1], sys.argv[2:]
for url in urls:
    try:
        if library == "urllib":
            import urllib.error
            import urllib.request
            try:
                with urllib.request.urlopen(url, timeout=20) as response:
                    status, body = response.status, response.read().decode()
            except urllib.error.HTTPError as err:
                status, body = err.code, err.read().decode()
        elif library == "requests":
            import requests
            response = requests.get(url, timeout=20)
            status, body = response.status_code, response.text
        else:
            import httpx
            response = httpx.get(url, timeout=20)
            status, body = response.status_code, response.text
        print(status, body.strip())
    except Exception as err:  # noqa: BLE001 - report, do not crash
        print(0, repr(err).replace("\n", " "))
