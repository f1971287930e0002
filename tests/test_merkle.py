"""The RFC 6962 Merkle module against Certificate Transparency's published test vectors.

The vectors are those of the CT reference implementations:
- leaf and node hashes: transparency-dev/merkle, ``rfc6962/rfc6962_test.go``
  (TestRFC6962Hasher);
- the eight leaf inputs, the roots of the trees of 1..8 of them, and the inclusion and
  consistency proofs: transparency-dev/merkle, ``proof/verify_test.go`` (``leaves``, ``roots``,
  ``inclusionProofs``, ``consistencyProofs``), which carries them over from
  certificate-transparency's C++ ``merkle_tree_test.cc`` and trillian's ``merkle`` package.
  Their leaf numbers are 1-based; here they are 0-based indices.
The corrupted-proof probes follow that file's ``corruptInclusionProof`` and
``corruptConsistencyProof``: every one must be refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenants.audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)


def h(text: str) -> bytes:
    return bytes.fromhex(text)


LEAF_INPUTS = [
    h(""),
    h("00"),
    h("10"),
    h("2021"),
    h("3031"),
    h("40414243"),
    h("5051525354555657"),
    h("606162636465666768696a6b6c6d6e6f"),
]
LEAVES = [leaf_hash(d) for d in LEAF_INPUTS]

# ROOTS[n] is the root of the tree of the first n leaf inputs.
ROOTS = {
    0: h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    1: h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    2: h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    3: h("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    4: h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    5: h("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    6: h("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    7: h("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    8: h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
}

# (index, size, audit path)
INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        5,
        8,
        [
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (2, 3, [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (
        1,
        5,
        [
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]

# (old size, new size, consistency proof)
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        5,
        [
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        6,
        7,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
]

SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")


def subtree_of(leaves: list[bytes]) -> Callable[[int, int], bytes]:
    return lambda a, b: root_of(leaves[a:b])


# ----------------------------------------------------------------------------- hashing


def test_hasher_vectors() -> None:
    assert EMPTY_ROOT == h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert leaf_hash(b"") == h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    assert leaf_hash(b"L123456") == h(
        "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    )
    assert node_hash(b"N123", b"N456") == h(
        "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    )


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    a, b = leaf_hash(b"Hello"), leaf_hash(b"World")
    assert a != b
    assert node_hash(a, b) != leaf_hash(a + b)  # second-preimage resistance
    assert node_hash(a, b) != node_hash(b, a)


@pytest.mark.parametrize("n", sorted(ROOTS))
def test_roots_of_the_reference_trees(n: int) -> None:
    assert root_of(LEAVES[:n]) == ROOTS[n]


def test_frontier_gives_every_reference_root_as_it_grows() -> None:
    frontier = Frontier()
    assert frontier.root() == ROOTS[0]
    for n, leaf in enumerate(LEAVES, start=1):
        frontier.push(leaf)
        assert frontier.size == n
        assert frontier.root() == ROOTS[n], n


# ----------------------------------------------------------------------------- inclusion


def corrupt_inclusion(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> Iterator[tuple[str, int, int, list[bytes], bytes, bytes]]:
    yield "index - 1", index - 1, size, proof, root, leaf
    yield "index + 1", index + 1, size, proof, root, leaf
    yield "index ^ 2", index ^ 2, size, proof, root, leaf
    yield "size * 2", index, size * 2, proof, root, leaf
    yield "size // 2", index, size // 2, proof, root, leaf
    yield "wrong leaf", index, size, proof, root, b"WrongLeaf"
    yield "empty root", index, size, proof, EMPTY_ROOT, leaf
    yield "random root", index, size, proof, SOME_HASH, leaf
    yield "trailing garbage", index, size, [*proof, b""], root, leaf
    yield "trailing root", index, size, [*proof, root], root, leaf
    yield "preceding garbage", index, size, [b"", *proof], root, leaf
    yield "preceding root", index, size, [root, *proof], root, leaf
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 8]) + bad[i][1:]
        yield f"proof[{i}] bit 3 flipped", index, size, bad, root, leaf
    if proof:
        yield "last component removed", index, size, proof[:-1], root, leaf
    if len(proof) > 1:
        yield "component inserted", index, size, [proof[0], SOME_HASH, *proof[1:]], root, leaf


@pytest.mark.parametrize(("index", "size", "expected"), INCLUSION)
def test_inclusion_proofs_match_the_vectors(index: int, size: int, expected: list[bytes]) -> None:
    assert inclusion_proof(index, size, subtree_of(LEAVES)) == expected
    assert verify_inclusion(LEAVES[index], index, size, expected, ROOTS[size])


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_corrupted_inclusion_proofs_are_refused(index: int, size: int, proof: list[bytes]) -> None:
    accepted = [
        desc
        for desc, i, n, p, root, leaf in corrupt_inclusion(
            index, size, proof, ROOTS[size], LEAVES[index]
        )
        if verify_inclusion(leaf, i, n, p, root)
    ]
    assert accepted == []


@pytest.mark.parametrize(("index", "size"), [(0, 0), (0, 1), (1, 0), (2, 1)])
def test_inclusion_with_an_empty_proof_and_a_wrong_root_or_leaf(index: int, size: int) -> None:
    assert not verify_inclusion(SOME_HASH, index, size, [], b"")
    assert not verify_inclusion(b"", index, size, [], EMPTY_ROOT)
    assert not verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)


def test_single_entry_tree_root_is_its_leaf() -> None:
    leaf = leaf_hash(b"data")
    assert verify_inclusion(leaf, 0, 1, [], leaf)
    assert not verify_inclusion(b"", 0, 1, [], leaf)
    assert not verify_inclusion(leaf, 0, 1, [], b"")


def test_inclusion_proof_of_an_index_outside_the_tree_is_an_error() -> None:
    with pytest.raises(ValueError):
        inclusion_proof(8, 8, subtree_of(LEAVES))
    with pytest.raises(ValueError):
        inclusion_proof(-1, 8, subtree_of(LEAVES))


# ----------------------------------------------------------------------------- consistency


def corrupt_consistency(
    old: int, new: int, r1: bytes, r2: bytes, proof: list[bytes]
) -> Iterator[tuple[str, int, int, bytes, bytes, list[bytes]]]:
    yield "old - 1", old - 1, new, r1, r2, proof
    yield "old + 1", old + 1, new, r1, r2, proof
    yield "old ^ 2", old ^ 2, new, r1, r2, proof
    yield "new * 2", old, new * 2, r1, r2, proof
    yield "new // 2", old, new // 2, r1, r2, proof
    yield "wrong old root", old, new, b"WrongRoot", r2, proof
    yield "wrong new root", old, new, r1, b"WrongRoot", proof
    yield "swapped roots", old, new, r2, r1, proof
    yield "empty proof", old, new, r1, r2, []
    yield "trailing garbage", old, new, r1, r2, [*proof, b""]
    yield "trailing old root", old, new, r1, r2, [*proof, r1]
    yield "trailing new root", old, new, r1, r2, [*proof, r2]
    yield "preceding garbage", old, new, r1, r2, [b"", *proof]
    yield "preceding old root", old, new, r1, r2, [r1, *proof]
    yield "preceding new root", old, new, r1, r2, [r2, *proof]
    yield "preceding proof[0]", old, new, r1, r2, [proof[0], *proof]
    yield "truncated", old, new, r1, r2, proof[:-1]
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 16]) + bad[i][1:]
        yield f"proof[{i}] bit 4 flipped", old, new, r1, r2, bad


@pytest.mark.parametrize(("old", "new", "expected"), CONSISTENCY)
def test_consistency_proofs_match_the_vectors(old: int, new: int, expected: list[bytes]) -> None:
    assert consistency_proof(old, new, subtree_of(LEAVES)) == expected
    assert verify_consistency(old, new, ROOTS[old], ROOTS[new], expected)


@pytest.mark.parametrize(("old", "new", "proof"), [c for c in CONSISTENCY if c[2]])
def test_corrupted_consistency_proofs_are_refused(old: int, new: int, proof: list[bytes]) -> None:
    accepted = [
        desc
        for desc, a, b, r1, r2, p in corrupt_consistency(old, new, ROOTS[old], ROOTS[new], proof)
        if verify_consistency(a, b, r1, r2, p)
    ]
    assert accepted == []


def test_trivial_consistency() -> None:
    root1, root2 = b"don't care 1", b"don't care 2"
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert verify_consistency(1, 1, root2, root2, [])
    assert verify_consistency(0, 5, EMPTY_ROOT, ROOTS[5], [])
    assert not verify_consistency(0, 0, root1, root2, [])
    assert not verify_consistency(1, 1, root1, root2, [])
    assert not verify_consistency(1, 0, root1, root2, [])  # time travel to the past
    assert not verify_consistency(2, 1, root1, root2, [])
    assert not verify_consistency(1, 2, root1, root2, [])  # a proof is needed
    # Roots that match but a proof that is not empty.
    assert not verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])
    assert not verify_consistency(1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT])


def test_consistency_of_sizes_that_do_not_nest_is_an_error() -> None:
    with pytest.raises(ValueError):
        consistency_proof(5, 3, subtree_of(LEAVES))


# ----------------------------------------------------------------------------- beyond the vectors


@given(st.integers(1, 70), st.data())
def test_every_proof_verifies_against_a_recursive_reference(n: int, data: st.DataObject) -> None:
    leaves = [leaf_hash(hashlib.sha256(bytes([i % 256, i // 256])).digest()) for i in range(n)]
    roots = {m: root_of(leaves[:m]) for m in range(n + 1)}
    index = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(index, n, subtree_of(leaves))
    assert len(proof) <= (n - 1).bit_length()
    assert verify_inclusion(leaves[index], index, n, proof, roots[n])
    old = data.draw(st.integers(0, n))
    cproof = consistency_proof(old, n, subtree_of(leaves))
    assert verify_consistency(old, n, roots[old], roots[n], cproof)
    if cproof:
        assert not verify_consistency(old, n, roots[old], roots[n], cproof[:-1])
