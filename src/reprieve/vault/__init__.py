"""The vault: storage format, keys, packs, index, trees, points, locks, check, prune."""
