"""POSTs exactly N orders over C keep-alive connections; prints the time of the last answer."""
import http.client
import sys
import threading
import time

host, port, total, connections = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
failures = []


def worker(index, count):
    connection = http.client.HTTPConnection(host, port)
    for n in range(count):
        cents = (index * 100003 + n * 7919) % 100000 + 1
        body = (
            f'{{"customer_id": "burst-{n % 1000}", "product_id": "product-{n % 50}", '
            f'"quantity": {n % 5 + 1}, "total_amount": {cents // 100}.{cents % 100:02d}}}'
        )
        connection.request("POST", "/orders", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        if response.status != 201:
            failures.append(response.status)


started = time.time()
threads = [
    threading.Thread(target=worker, args=(i, total // connections + (1 if i < total % connections else 0)))
    for i in range(connections)
]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
finished = time.time()
if failures:
    print(f"{len(failures)} requests failed: {set(failures)}", file=sys.stderr)
    sys.exit(1)
print(f"{started:.3f} {finished:.3f}")
