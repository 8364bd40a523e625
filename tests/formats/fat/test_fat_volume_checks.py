"""The FAT reader's checks on volumes written byte by byte: each FAT type's entries and
end-of-chain mark, the bounds of a chain, the clusters a file may claim, directory entries
(deleted, end, volume label, dot entries, long names and their checksums), the depth of the
tree — and a volume whose directories share clusters, which made the walk repeat a subtree
once per path (a few kilobytes kept the guest's boot busy for ever)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tests.formats.fat.conftest import FatImage, checksum, entry, long_entries, make_fat

from cvm.errors import FormatError
from cvm.formats.fat import FatVolume
from cvm.formats.fat.boot_sector import FatType
from cvm.formats.fat.volume import short_name_checksum

DIR = 0x10
END = {FatType.FAT12: 0xFFF, FatType.FAT16: 0xFFFF, FatType.FAT32: 0x0FFFFFFF}


def _refusal(call: Callable[[], object]) -> str:
    with pytest.raises(FormatError) as refused:
        call()
    assert type(refused.value) is FormatError
    return str(refused.value)


def _files(image: FatImage) -> dict[str, bytes]:
    return FatVolume.from_bytes(image.to_bytes()).files()


def _file(image: FatImage, name: bytes, first: int, content: bytes, where: int | None = None,
          index: int = 0) -> None:
    """A file in the root (or at directory offset ``where``), in adjacent clusters."""
    count = max(1, -(-len(content) // 512))
    image.chain(*range(first, first + count))
    image.write(first, content)
    image.put(image.root_offset() if where is None else where,
              *([bytes(32)] * index), entry(name, 0x20, first, len(content)))


# --- the volume and its FAT -----------------------------------------------------------------

def test_the_boot_sector_may_not_claim_more_than_the_partition() -> None:
    image = make_fat(FatType.FAT12)
    data = image.to_bytes()
    assert FatVolume(lambda o, n: data[o : o + n], len(data)).boot.total_sectors == 104
    assert FatVolume(lambda o, n: data[o : o + n]).files() == {}
    assert _refusal(lambda: FatVolume(lambda o, n: data[o : o + n], len(data) - 1)) == (
        "FAT volume: the boot sector claims 104 sectors, the partition holds 103")


def test_the_reader_fetches_the_first_fat_then_only_what_it_reads() -> None:
    image = make_fat(FatType.FAT16)
    _file(image, b"A       TXT", 5, b"a" * 600)
    data = image.to_bytes()
    reads: list[tuple[int, int]] = []

    def read(offset: int, size: int) -> bytes:
        reads.append((offset, size))
        return data[offset : offset + size]

    assert FatVolume(read, len(data)).files() == {"/A.TXT": b"a" * 600}
    root = image.root_offset()
    assert reads == [(0, 512), (512, 17 * 512), (root, 16 * 32),
                     (image.cluster_offset(5), 1024)]


def test_from_bytes_refuses_to_read_outside_the_data() -> None:
    image = make_fat(FatType.FAT12)
    data = image.to_bytes()
    volume = FatVolume.from_bytes(data)
    read = volume._read
    assert read(len(data) - 4, 4) == data[-4:]
    assert _refusal(lambda: read(len(data) - 4, 5)) == (
        f"FAT volume: read of 5 bytes at {len(data) - 4} is past the end ({len(data)} bytes)")
    assert _refusal(lambda: read(-1, 1)) == (
        f"FAT volume: read of 1 bytes at -1 is past the end ({len(data)} bytes)")


@pytest.mark.parametrize("kind", list(FatType))
def test_each_fat_type_reads_its_own_entries(kind: FatType) -> None:
    image = make_fat(kind)
    order = [7, 4, 9, 6, 3, 8, 10, 5]  # odd and even neighbours: FAT12 packs them in pairs
    image.chain(*order)
    assert FatVolume.from_bytes(image.to_bytes()).chain(7) == order


def test_fat32_ignores_the_top_four_bits_of_an_entry() -> None:
    image = make_fat(FatType.FAT32)
    image.set_fat(5, 0xF0000006)
    image.set_fat(6, 0xFFFFFFF8)
    assert FatVolume.from_bytes(image.to_bytes()).chain(5) == [5, 6]


@pytest.mark.parametrize("kind", list(FatType))
def test_the_end_of_chain_mark_and_the_bad_cluster_mark(kind: FatType) -> None:
    end = {FatType.FAT12: 0xFF8, FatType.FAT16: 0xFFF8, FatType.FAT32: 0x0FFFFFF8}[kind]
    image = make_fat(kind)
    image.set_fat(5, end)
    assert FatVolume.from_bytes(image.to_bytes()).chain(5) == [5]
    image.set_fat(5, end - 1)  # a bad cluster: not an end, and no cluster either
    volume = FatVolume.from_bytes(image.to_bytes())
    last = volume.boot.cluster_count + 1
    assert _refusal(lambda: volume.chain(5)) == (
        f"FAT volume: cluster {end - 1} in the chain from 5 is outside the data region "
        f"(2..{last})")


def test_a_chain_stays_inside_the_data_region() -> None:
    image = make_fat(FatType.FAT12)  # 100 clusters: 2..101
    image.chain(101)
    volume = FatVolume.from_bytes(image.to_bytes())
    assert volume.chain(101) == [101]
    for first in (0, 1, 102):
        assert _refusal(lambda first=first: volume.chain(first)) == (
            f"FAT volume: cluster {first} in the chain from {first} is outside the data region "
            "(2..101)")
    image.chain(50, 102)
    assert _refusal(lambda: FatVolume.from_bytes(image.to_bytes()).chain(50)) == (
        "FAT volume: cluster 102 in the chain from 50 is outside the data region (2..101)")


def test_a_chain_that_comes_back_is_refused() -> None:
    image = make_fat(FatType.FAT16)
    image.set_fat(5, 6)
    image.set_fat(6, 7)
    image.set_fat(7, 6)
    assert _refusal(lambda: FatVolume.from_bytes(image.to_bytes()).chain(5)) == (
        "FAT volume: the chain from cluster 5 loops")


# --- files ----------------------------------------------------------------------------------

def test_a_file_is_cut_to_its_size_and_its_chain_must_cover_it() -> None:
    content = bytes(range(256)) * 6
    image = make_fat(FatType.FAT16)
    image.chain(5, 6, 7)
    image.write(5, content)
    for size in (1536, 1025, 1024, 1000, 1):
        image.put(image.root_offset(), entry(b"FILE       ", 0x20, 5, size))
        assert _files(image) == {"/FILE": content[:size]}
    image.put(image.root_offset(), entry(b"LONG       ", 0x20, 5, 1537))
    assert _refusal(lambda: _files(image)) == (
        "FAT volume: a file of 1537 bytes has a chain of only 3 clusters")


def test_an_empty_file_reads_nothing_and_needs_no_cluster() -> None:
    image = make_fat(FatType.FAT12)
    image.put(image.root_offset(), entry(b"EMPTY      ", 0x20, 0, 0))
    assert _files(image) == {"/EMPTY": b""}


def test_a_fixed_root_reads_all_its_entries() -> None:
    image = make_fat(FatType.FAT12)
    last = image.root_offset() + 15 * 32
    _file(image, b"LAST       ", 10, b"the sixteenth entry", where=last)
    image.put(image.root_offset(), *[entry(b"F%02d        " % n, 0x20, 0, 0) for n in range(15)])
    files = _files(image)
    assert len(files) == 16
    assert files["/LAST"] == b"the sixteenth entry"


def test_a_fat32_root_is_a_chain_of_clusters() -> None:
    image = make_fat(FatType.FAT32)
    image.chain(2, 40)
    _file(image, b"SECOND     ", 50, b"in the second cluster of the root",
          where=image.cluster_offset(40))
    image.put(image.cluster_offset(2), *[entry(b"F%02d        " % n, 0x20, 0, 0)
                                         for n in range(16)])
    files = _files(image)
    assert len(files) == 17
    assert files["/SECOND"] == b"in the second cluster of the root"


def test_the_high_cluster_word_counts_on_fat32_only() -> None:
    for kind in (FatType.FAT16, FatType.FAT32):
        image = make_fat(kind)
        image.chain(5)
        image.write(5, b"five")
        raw = bytearray(entry(b"F          ", 0x20, 5, 4))
        raw[20:22] = (1).to_bytes(2, "little")  # cluster 0x10005 on FAT32
        image.put(image.root_offset(), bytes(raw))
        if kind is FatType.FAT16:
            assert _files(image) == {"/F": b"five"}
        else:
            image.chain(0x10005)
            image.write(0x10005, b"high")
            assert _files(image) == {"/F": b"high"}


# --- directory entries ----------------------------------------------------------------------

def test_short_names_their_case_bits_and_the_e5_escape() -> None:
    image = make_fat(FatType.FAT16)
    image.put(image.root_offset(),
              entry(b"README  TXT", 0x20, 0, 0),
              entry(b"LOWER   TXT", 0x20, 0, 0, case=0x08),
              entry(b"EXT     TXT", 0x20, 0, 0, case=0x10),
              entry(b"BOTH    TXT", 0x20, 0, 0, case=0x18),
              entry(b"NOEXT      ", 0x20, 0, 0, case=0x10),
              entry(b"\x05BC     DAT", 0x20, 0, 0))
    assert list(_files(image)) == ["/README.TXT", "/lower.TXT", "/EXT.txt", "/both.txt",
                                   "/NOEXT", "/\xe5BC.DAT"]


def test_the_end_of_the_directory_deleted_entries_labels_and_dot_entries() -> None:
    image = make_fat(FatType.FAT16)
    image.chain(5)
    here = image.cluster_offset(5)
    image.put(here, entry(b".          ", DIR, 5), entry(b"..         ", DIR, 0),
              entry(b"INNER      ", 0x20, 0, 0))
    image.put(image.root_offset(),
              entry(b"VOLUME     ", 0x08),
              entry(b"\xe5ONE       ", 0x20, 0, 0),
              entry(b"SUB        ", DIR, 5),
              bytes(32),
              entry(b"AFTER      ", 0x20, 0, 0))
    assert _files(image) == {"/SUB/INNER": b""}


def test_long_names_are_read_and_checked() -> None:
    image = make_fat(FatType.FAT16)
    name = "A long name that takes three entries.txt"
    short = b"ALONGN~1TXT"
    image.put(image.root_offset(), *long_entries(name, short), entry(short, 0x20, 0, 0))
    assert _files(image) == {f"/{name}": b""}
    assert len(long_entries(name, short)) == 4
    assert [short_name_checksum(n) for n in (short, b"README  TXT", b"\xff" * 11)] == [
        checksum(n) for n in (short, b"README  TXT", b"\xff" * 11)]


def _lfn_refusal(pieces: list[bytes], short: bytes = b"ALONGN~1TXT") -> str:
    image = make_fat(FatType.FAT16)
    image.put(image.root_offset(), *pieces, entry(short, 0x20, 0, 0))
    return _refusal(lambda: _files(image))


def test_long_name_entries_out_of_sequence_are_refused() -> None:
    pieces = long_entries("A long name that takes three entries.txt", b"ALONGN~1TXT")
    out_of_sequence = "FAT volume: /: long-name entry at {:#x} is out of sequence"
    assert _lfn_refusal([pieces[0], pieces[2], pieces[1], pieces[3]]) == (
        out_of_sequence.format(0x20))
    first_last = bytearray(pieces[0])
    first_last[0] = 0x40  # the last piece numbered 0
    assert _lfn_refusal([bytes(first_last)]) == out_of_sequence.format(0)
    other_sum = bytearray(pieces[1])
    other_sum[13] ^= 1
    assert _lfn_refusal([pieces[0], bytes(other_sum), pieces[2], pieces[3]]) == (
        out_of_sequence.format(0x20))
    middle = bytearray(pieces[1])  # a piece that is not first, without a first before it
    assert _lfn_refusal([bytes(middle), pieces[2], pieces[3]]) == out_of_sequence.format(0)


def test_a_long_name_must_belong_to_the_short_entry_after_it() -> None:
    pieces = long_entries("A long name that takes three entries.txt", b"ALONGN~1TXT")
    assert _lfn_refusal(pieces, short=b"OTHER   TXT") == (
        "FAT volume: /: the long name before 'OTHER.TXT' does not belong to it "
        "(checksum or sequence)")
    assert _lfn_refusal(pieces[:3]) == (
        "FAT volume: /: the long name before 'ALONGN~1.TXT' does not belong to it "
        "(checksum or sequence)")


def test_a_deleted_entry_drops_the_long_name_before_it() -> None:
    image = make_fat(FatType.FAT16)
    short = b"ALONGN~1TXT"
    pieces = long_entries("A long name that takes three entries.txt", short)
    image.put(image.root_offset(), *pieces, entry(b"\xe5LONGN~1TXT", 0x20, 0, 0),
              entry(b"PLAIN      ", 0x20, 0, 0))
    assert _files(image) == {"/PLAIN": b""}
    image = make_fat(FatType.FAT16)  # deleted long-name entries, then a plain short entry
    deleted = [b"\xe5" + p[1:] for p in pieces]
    image.put(image.root_offset(), *deleted, entry(b"PLAIN      ", 0x20, 0, 0))
    assert _files(image) == {"/PLAIN": b""}


def test_a_long_name_entry_is_recognised_by_its_low_six_attribute_bits() -> None:
    short = b"ALONGN~1TXT"
    pieces = [bytearray(p) for p in long_entries("ab", short)]
    pieces[0][11] = 0x4F  # the top bits are not part of the test
    image = make_fat(FatType.FAT16)
    image.put(image.root_offset(), *map(bytes, pieces), entry(short, 0x20, 0, 0))
    assert _files(image) == {"/ab": b""}


@pytest.mark.parametrize(("long_name", "shown"), [("a/b", "'a/b'"), ("a\\b", "'a\\\\b'")])
def test_names_with_separators_are_refused(long_name: str, shown: str) -> None:
    short = b"AB         "
    image = make_fat(FatType.FAT16)
    image.put(image.root_offset(), entry(b"OK         ", 0x20, 0, 0),
              *long_entries(long_name, short), entry(short, 0x20, 0, 0))
    assert _refusal(lambda: _files(image)) == (
        f"FAT volume: /: entry at 0x40 has an invalid name {shown}")


def test_an_entry_without_a_name_is_refused() -> None:
    image = make_fat(FatType.FAT16)
    image.put(image.root_offset(), entry(b"           ", 0x20, 0, 0))
    assert _refusal(lambda: _files(image)) == "FAT volume: /: entry at 0x0 has an invalid name ''"


# --- the tree -------------------------------------------------------------------------------

def _nested(depth: int) -> FatImage:
    image = make_fat(FatType.FAT16)
    where = image.root_offset()
    for level in range(depth):
        cluster = 10 + level
        image.chain(cluster)
        image.put(where, entry(b"D%02d        " % level, DIR, cluster))
        where = image.cluster_offset(cluster)
    _file(image, b"LEAF       ", 100, b"leaf", where=where)
    return image


def test_sixteen_directories_deep_is_the_limit() -> None:
    deepest = "".join(f"/D{level:02d}" for level in range(16))
    assert _files(_nested(16)) == {f"{deepest}/LEAF": b"leaf"}
    assert _refusal(lambda: _files(_nested(17))) == (
        f"FAT volume: {deepest}/D16 nests deeper than 16")


def test_a_directory_reachable_twice_is_refused() -> None:
    """Directories that name the next one over and over: without the check the walk visits
    each path (fan-out ** depth directories); with it the second visit is refused at once."""
    image = make_fat(FatType.FAT16)
    reads = 0
    for level in range(15):
        image.chain(10 + level)
        where = image.root_offset() if level == 0 else image.cluster_offset(9 + level)
        image.put(where, *[entry(b"%c%02d        " % (65 + n, level), DIR, 10 + level)
                           for n in range(14 if level else 1)])
    data = image.to_bytes()

    def read(offset: int, size: int) -> bytes:
        nonlocal reads
        reads += 1
        assert reads < 100, "the walk repeats the same directories"
        return data[offset : offset + size]

    volume = FatVolume(read, len(data))
    assert _refusal(volume.files).startswith("FAT volume: cluster 11 of the chain from 11 "
                                             "belongs to another file or directory too")
    assert reads < 20


def test_two_files_sharing_a_cluster_are_refused() -> None:
    image = make_fat(FatType.FAT16)
    image.chain(5, 6)
    image.chain(7, 6)  # 6 is in both chains
    image.put(image.root_offset(), entry(b"ONE        ", 0x20, 5, 1024),
              entry(b"TWO        ", 0x20, 7, 1024))
    assert _refusal(lambda: _files(image)) == (
        "FAT volume: cluster 6 of the chain from 7 belongs to another file or directory too")


def test_a_file_in_the_root_chain_of_fat32_is_refused() -> None:
    image = make_fat(FatType.FAT32)
    image.put(image.cluster_offset(2), entry(b"ROOT       ", 0x20, 2, 10))
    assert _refusal(lambda: _files(image)) == (
        "FAT volume: cluster 2 of the chain from 2 belongs to another file or directory too")


def test_a_chain_longer_than_its_file_still_claims_all_its_clusters() -> None:
    image = make_fat(FatType.FAT16)
    image.chain(5, 6, 7)
    image.put(image.root_offset(), entry(b"ONE        ", 0x20, 5, 10),
              entry(b"TWO        ", 0x20, 7, 10))
    assert _refusal(lambda: _files(image)) == (
        "FAT volume: cluster 7 of the chain from 7 belongs to another file or directory too")


def test_a_name_given_twice_in_a_directory_is_refused() -> None:
    image = make_fat(FatType.FAT16)
    image.put(image.root_offset(), entry(b"SAME       ", 0x20, 0, 0),
              entry(b"SAME       ", 0x20, 0, 0, case=0x08))
    assert _refusal(lambda: _files(image)) == (
        "FAT volume: /same is named twice in its directory")
    image = make_fat(FatType.FAT16)  # the same name in two directories is two files
    image.chain(5)
    image.put(image.cluster_offset(5), entry(b"SAME       ", 0x20, 0, 0))
    image.put(image.root_offset(), entry(b"SAME       ", 0x20, 0, 0),
              entry(b"D          ", DIR, 5))
    assert _files(image) == {"/SAME": b"", "/D/SAME": b""}


# --- what the first mutation run asked for --------------------------------------------------

def test_short_names_lose_only_their_space_padding() -> None:
    image = make_fat(FatType.FAT16)
    image.put(image.root_offset(),
              entry(b"BOX     EXX", 0x20, 0, 0),
              entry(b"TAB\t    A\t ", 0x20, 0, 0),
              entry(b"README  A  ", 0x20, 0, 0),
              entry(b"SPACE     B", 0x20, 0, 0))
    assert list(_files(image)) == ["/BOX.EXX", "/TAB\t.A\t", "/README.A", "/SPACE.  B"]


def test_a_file_reads_only_the_clusters_its_size_needs() -> None:
    image = make_fat(FatType.FAT16)
    image.chain(5, 6, 7, 8)
    image.write(5, b"x" * 2048)
    for size, length in ((1024, 1024), (1023, 1024), (1025, 1536), (1, 512)):
        image.put(image.root_offset(), entry(b"FILE       ", 0x20, 5, size))
        data = image.to_bytes()
        reads: list[tuple[int, int]] = []

        def read(offset: int, count: int, data: bytes = data,
                 reads: list[tuple[int, int]] = reads) -> bytes:
            reads.append((offset, count))
            return data[offset : offset + count]

        assert FatVolume(read, len(data)).files() == {"/FILE": b"x" * size}
        assert reads[-1] == (image.cluster_offset(5), length)


def test_a_long_name_with_a_lone_surrogate_is_read_with_a_replacement() -> None:
    short = b"ODD        "
    piece = bytearray(long_entries("ab", short)[0])
    piece[1:3] = b"\x00\xd8"  # a high surrogate with no low one after it
    image = make_fat(FatType.FAT16)
    image.put(image.root_offset(), bytes(piece), entry(short, 0x20, 0, 0))
    assert list(_files(image)) == ["/\ufffdb"]


def test_a_long_name_ends_at_its_first_nul() -> None:
    short = b"NUL        "
    pieces = long_entries("ab\0cd", short)
    image = make_fat(FatType.FAT16)
    image.put(image.root_offset(), *pieces, entry(short, 0x20, 0, 0))
    assert list(_files(image)) == ["/ab"]


def test_a_stray_long_name_piece_after_a_used_name_is_refused() -> None:
    """After a deleted entry or a short entry the next long name must start with its last
    piece: a piece numbered 1 alone, carrying the old checksum, is out of sequence."""
    short = b"ALONGN~1TXT"
    one, *_ = long_entries("ab", short)  # one piece: number 1, marked last
    stray = bytes([0x01]) + one[1:]  # number 1, not marked last
    for before in ([one, entry(short, 0x20, 0, 0)], [one, entry(b"\xe5" + short[1:])]):
        image = make_fat(FatType.FAT16)
        at = 32 * len(before)
        image.put(image.root_offset(), *before, stray, entry(short, 0x20, 0, 0))
        assert _refusal(lambda image=image: _files(image)) == (
            f"FAT volume: /: long-name entry at {at:#x} is out of sequence")
