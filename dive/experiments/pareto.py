"""The storage/quality Pareto front, shared by the report's frontier table and the frontier figure."""

from __future__ import annotations


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both fewer bytes and higher nDCG@10."""
    front = []
    for i, (size, score) in enumerate(points):
        dominated = any(other_size <= size and other_score >= score and (other_size, other_score) != (size, score)
                        for other_size, other_score in points)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])
