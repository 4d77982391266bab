#!/usr/bin/env python3
"""How many nodes online placement needs for `wkube-bench scheduler`'s pods.

Places the benchmark's pod sequence (the same sizes, from the same fixed
LCG, in the same order) one pod at a time onto 16-core / 32 GiB nodes of
110 pods, each time on the feasible node a scoring function ranks highest
(first in name order on a tie), with exact rather than rounded scores. It
shows what the scorer can and cannot change: every function here lands
within a node or two of the others, above 1.05x the lower bound.

It then places the pods in batches, as wkube's scheduler places the pods
of one priority that wait together (src/scheduler/batch.rs): each pod
still on its best node, the batch in an order that tops up the fullest
nodes with the shapes that fill them.

For contrast it also packs the same pods offline, knowing all of them up
front: one node at a time, each time adding the pod whose (cpu, memory)
shape points most nearly along what the node has left. That needs far
fewer nodes, so the lower bound is not what stands in the way; placing
pods one by one as they arrive, as a scheduler must, is.

    python3 bench/packing-sim.py
"""

SIZES = [(100, 128), (250, 256), (250, 1024), (500, 512),
         (500, 2048), (1000, 1024), (1000, 4096), (2000, 2048)]
NODE_CPU, NODE_MEM, NODE_PODS = 16000, 32768, 110


def pods(n=10_000):
    x = 0x2545_F491_4F6C_DD1D
    out = []
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % 2**64
        out.append(SIZES[(x >> 33) % len(SIZES)])
    return out


def place(seq, score, nodes=1000):
    cpu, mem, count = [0] * nodes, [0] * nodes, [0] * nodes
    for c, m in seq:
        best, best_score = None, None
        for i in range(nodes):
            if cpu[i] + c > NODE_CPU or mem[i] + m > NODE_MEM or count[i] >= NODE_PODS:
                continue
            s = score((cpu[i] + c) / NODE_CPU, (mem[i] + m) / NODE_MEM)
            if best_score is None or s > best_score:
                best, best_score = i, s
            if count[i] == 0:
                break  # every later node is empty too and scores the same
        cpu[best] += c
        mem[best] += m
        count[best] += 1
    return sum(1 for k in count if k)


def place_batched(seq, batch, wba=1, nodes=1000):
    """Places `batch` pods at a time the way wkube's scheduler places a
    batch (src/scheduler/batch.rs): each pod goes to its best node by
    MostAllocated plus `wba` times BalancedAllocation (integer scores, as
    the plugins give them); next is the pod whose best node is fullest,
    then the one whose requests point most nearly along what that node has
    left."""
    cpu, mem, count = [0] * nodes, [0] * nodes, [0] * nodes

    def score(p, j):
        c, m = p
        if cpu[j] + c > NODE_CPU or mem[j] + m > NODE_MEM or count[j] >= NODE_PODS:
            return None
        fc, fm = (cpu[j] + c) / NODE_CPU, (mem[j] + m) / NODE_MEM
        return int(100 * (fc + fm) / 2) + wba * int(100 * (1 - abs(fc - fm) / 2))

    def best(p):
        found = None
        for j in range(nodes):
            s = score(p, j)
            if s is not None and (found is None or s > found[1]):
                found = (j, s)
            if s is not None and count[j] == 0:
                break  # every later node is empty too and scores the same
        return found

    for start in range(0, len(seq), batch):
        pending = [(p, best(p)) for p in seq[start:start + batch]]
        while pending:
            def key(k):
                (c, m), (j, _) = pending[k]
                dc, dm = c / NODE_CPU, m / NODE_MEM
                rc, rm = 1 - cpu[j] / NODE_CPU, 1 - mem[j] / NODE_MEM
                full = cpu[j] / NODE_CPU + mem[j] / NODE_MEM
                return (full, (dc * rc + dm * rm) / (dc * dc + dm * dm) ** 0.5, -k)

            (c, m), (j, _) = pending.pop(max(range(len(pending)), key=key))
            cpu[j] += c
            mem[j] += m
            count[j] += 1
            for k, (p, (bj, bs)) in enumerate(pending):
                s = score(p, j)
                if bj == j and (s is None or s < bs):
                    pending[k] = (p, best(p))
                elif bj == j:
                    pending[k] = (p, (j, s))
                elif s is not None and (s > bs or (s == bs and j < bj)):
                    pending[k] = (p, (j, s))
    return sum(1 for k in count if k)


def offline(seq):
    """Fills one node at a time with the best-aligned remaining pod."""
    left = {}
    for p in seq:
        left[p] = left.get(p, 0) + 1
    nodes = 0
    while any(left.values()):
        rc, rm, k = NODE_CPU, NODE_MEM, 0
        while k < NODE_PODS:
            fits = [p for p, n in left.items() if n and p[0] <= rc and p[1] <= rm]
            if not fits:
                break

            def alignment(p):
                dc, dm = p[0] / NODE_CPU, p[1] / NODE_MEM
                return (dc * rc / NODE_CPU + dm * rm / NODE_MEM) / (dc * dc + dm * dm) ** 0.5

            best = max(fits, key=alignment)
            left[best] -= 1
            rc, rm, k = rc - best[0], rm - best[1], k + 1
        nodes += 1
    return nodes


def main():
    seq = pods()
    lower = max(-(-sum(c for c, _ in seq) // NODE_CPU),
                -(-sum(m for _, m in seq) // NODE_MEM))
    scorers = {
        "MostAllocated": lambda fc, fm: (fc + fm) / 2,
        "MostAllocated + BalancedAllocation": lambda fc, fm: (fc + fm) / 2 + 1 - abs(fc - fm) / 2,
        "dominant resource": max,
        "least-used resource": min,
        "squared utilisation": lambda fc, fm: fc * fc + fm * fm,
    }
    print(f"lower bound: {lower} nodes")
    for name, f in scorers.items():
        used = place(seq, f)
        print(f"{name}: {used} nodes ({used / lower:.3f}x)")
    for batch in (1, 16, 64):
        used = place_batched(seq, batch)
        print(f"wkube's batches of {batch}: {used} nodes ({used / lower:.3f}x)")
    used = offline(seq)
    print(f"offline, every pod known up front: {used} nodes ({used / lower:.3f}x)")


if __name__ == "__main__":
    main()
