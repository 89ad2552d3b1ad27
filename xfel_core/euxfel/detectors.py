"""The European XFEL imaging detectors: one table entry each, the quirks of its files written down once.

In the style of EXtra-data's detector components (``extra_data.components``), whose classes find a
run's modules and align their trains (:func:`xfel_core.readers.euxfel.module_frames` calls them):
an entry says where a module's frames are and how one frame lies in the files; the reduction is the
same for every detector. The layouts, as the facility writes them (and EXtra-data's mock writer):

========== ========== ============================== ======================================= =================
detector   module     raw frame (per entry)          corrected (``CORR-R####-<AGG>-S#####``)  sources
========== ========== ============================== ======================================= =================
DSSC1M     128 x 512  ``image.data`` (1, 128, 512) u2 ``image.data`` f4, ``image.mask`` u4   ``{name}/DET/{m}CH0:xtdf``
AGIPD1M    512 x 128  ``image.data`` (2, 512, 128) u2 the same, (512, 128)                   (corrected: ``/CORR/{m}CH0:output``)
           (16 mod.)  plane 0 the signal, 1 the gain
AGIPD500K  512 x 128  as AGIPD1M, 8 modules
LPD1M      256 x 256  ``image.data`` (1, 256, 256) u2 as DSSC
JUNGFRAU   512 x 1024 ``data.adc`` (cells, 512, 1024) ``data.adc`` f4, ``data.mask`` u4     ``{name}/DET/JNGFR{m:02d}:daqOutput``
                      u2: one entry per train, the    (cells, 512, 1024)                      (``/CORR/JNGFR{m:02d}:output``)
                      memory cells its frames; cells  modules numbered from 1
                      in ``data.memoryCell``
========== ========== ============================== ======================================= =================

A frame's pixels are contiguous in its entry: frame ``j`` of an entry starts ``j * pixels`` (plus the
plane) elements into it, so memory maps and h5py blocks serve every detector alike.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DetectorKind:
    """Where one detector type keeps a module's frames, raw and corrected."""

    name: str  #: the type, as in ``detector.type`` and EXtra-data's component class
    modules: int  #: modules of the full detector
    first_module: int  #: number of the first module in the source names (JUNGFRAU: 1)
    module_shape: tuple[int, int]  #: pixels of one module (slow scan, fast scan)
    detector_name: str  #: a usual Karabo detector name, the default of ``detector.name``
    raw_source: str  #: source of module ``{module}`` of detector ``{name}`` in raw files
    corr_source: str  #: the same in corrected files
    aggregator: str  #: the aggregator part of a module's file names
    group: str  #: the INDEX / INSTRUMENT group of the frames ("image" or "data")
    data_key: str  #: key of the pixel data in the group
    cell_key: str  #: key of the memory cell of each frame
    mask_key: str  #: key of the corrected data's per-pixel mask (0: good pixel)
    #: Planes of a raw entry before the pixels (AGIPD: 2, the signal and the gain stage): the signal is plane 0.
    raw_planes: int = 1
    #: Frames are the memory cells along an entry's first axis (JUNGFRAU: one entry per train).
    cells_in_entry: bool = False
    #: extra-geom class of the assembled detector (for previews).
    geometry: str = ""


KINDS: dict[str, DetectorKind] = {k.name: k for k in (
    DetectorKind("DSSC1M", 16, 0, (128, 512), "SCS_DET_DSSC1M-1", "{name}/DET/{module}CH0:xtdf",
                 "{name}/CORR/{module}CH0:output", "DSSC{module:02d}", "image", "data", "cellId", "mask",
                 geometry="DSSC_1MGeometry"),
    DetectorKind("AGIPD1M", 16, 0, (512, 128), "SPB_DET_AGIPD1M-1", "{name}/DET/{module}CH0:xtdf",
                 "{name}/CORR/{module}CH0:output", "AGIPD{module:02d}", "image", "data", "cellId", "mask",
                 raw_planes=2, geometry="AGIPD_1MGeometry"),
    DetectorKind("AGIPD500K", 8, 0, (512, 128), "HED_DET_AGIPD500K2G", "{name}/DET/{module}CH0:xtdf",
                 "{name}/CORR/{module}CH0:output", "AGIPD{module:02d}", "image", "data", "cellId", "mask",
                 raw_planes=2, geometry="AGIPD_500K2GGeometry"),
    DetectorKind("LPD1M", 16, 0, (256, 256), "FXE_DET_LPD1M-1", "{name}/DET/{module}CH0:xtdf",
                 "{name}/CORR/{module}CH0:output", "LPD{module:02d}", "image", "data", "cellId", "mask",
                 geometry="LPD_1MGeometry"),
    DetectorKind("JUNGFRAU", 8, 1, (512, 1024), "SPB_IRDA_JF4M", "{name}/DET/JNGFR{module:02d}:daqOutput",
                 "{name}/CORR/JNGFR{module:02d}:output", "JNGFR{module:02d}", "data", "adc", "memoryCell",
                 "mask", cells_in_entry=True, geometry="JUNGFRAUGeometry"),
)}


def kind(name: str) -> DetectorKind:
    """The table entry of a detector type; a wrong name is a ValueError listing the known ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown detector type {name!r}; known: {', '.join(KINDS)}") from None


def component(kind_: DetectorKind):
    """EXtra-data's component class of the detector type (it finds the modules and aligns their trains)."""
    from extra_data import components

    return getattr(components, kind_.name)
