"""In-situ TIFF series: per measurement the corrected frames and the ROI series, per sample the attenuation-corrected series."""

from __future__ import annotations

from ..config import BeamtimeConfig
from ..exceptions import RunDataError
from ..hashing import digest, files_fingerprint
from ..insitu import layout, pipeline
from ..lineage.model import BEAMTIME, AssetSpec, Check, Input, Job, Partitioning, Scope, Source, Workflow, register
from ..rois import rois_version, section_rois


def sample_keys(cfg: BeamtimeConfig, scope: Scope) -> list[str]:
    """The sample folders of the in-situ raw root, or the scope's."""
    found = layout.samples(cfg.insitu)
    return found if scope.samples is None else [s for s in scope.samples if s in found]


def measurement_keys(cfg: BeamtimeConfig, scope: Scope) -> list[str]:
    return [layout.measurement_key(s, m) for s in sample_keys(cfg, scope) for m in layout.measurements(cfg.insitu, s)]


MEASUREMENT = Partitioning("measurement", measurement_keys, dynamic="insitu_measurements")
SAMPLE = Partitioning("sample", sample_keys, dynamic="insitu_samples")


def has_insitu(cfg: BeamtimeConfig) -> bool:
    return cfg.insitu is not None


def files_version(cfg: BeamtimeConfig, key: str) -> str:
    """Source version of an in-situ measurement: its TIFFs and its sample's flat-field TIFFs."""
    ins = cfg.require_insitu()
    sample, _ = layout.split_measurement_key(key)
    try:
        flat = layout.tiff_files(layout.flatfield_dir(ins, sample))
    except RunDataError:
        flat = []
    return digest(files_fingerprint(layout.tiff_files(layout.measurement_dir(ins, key))), files_fingerprint(flat))


def rois_now(cfg: BeamtimeConfig, key: None) -> str:
    """Source version of the in-situ ROIs (insitu.rois or its ROI file)."""
    return rois_version(section_rois(cfg.require_insitu()))


def _measurements_of_sample(cfg: BeamtimeConfig, sample: str) -> dict[str, str]:
    return {f"roi_series:{k}": k for k in measurement_keys(cfg, Scope(samples=[sample]))}


WORKFLOW = register(Workflow("insitu", "In-situ TIFF series: corrected frames, ROI series, attenuation-corrected series", sources=[
    Source("insitu_files", MEASUREMENT, files_version, "Each in-situ measurement's TIFFs and its sample's flat-field "
           "TIFFs; version: names, sizes, modification times.", enabled=has_insitu),
    Source("insitu_rois", BEAMTIME, rois_now, "The in-situ ROIs (insitu.rois or insitu.roi_file); version: a hash "
           "of the ROIs.", enabled=has_insitu),
], assets=[
    AssetSpec("insitu_frames", MEASUREMENT, pipeline.make_insitu_frames,
              lambda cfg, key: layout.measurement_output(cfg, key, pipeline.FRAMES_FILE),
              inputs=(Input("insitu_files", as_="files"),),
              config={"insitu": {"timezone", "flatfield", "median_filter", "flatfield_good_range",
                                 "background_regions"}},
              kinds=("hdf5", "tiff"), slurm=True, enabled=has_insitu, job="insitu_measurement_job"),
    AssetSpec("roi_series", MEASUREMENT, pipeline.make_roi_series,
              lambda cfg, key: layout.measurement_output(cfg, key, pipeline.ROI_SERIES_FILE),
              inputs=(Input("insitu_frames"), Input("insitu_rois", as_="rois")),
              config={"insitu": {"timezone"}}, kinds=("parquet", "csv"), enabled=has_insitu,
              job="insitu_measurement_job"),
    AssetSpec("attenuation_corrected_series", SAMPLE, pipeline.make_attenuation_corrected_series,
              lambda cfg, sample: layout.output_dir(cfg, sample) / pipeline.SERIES_FILE,
              inputs=(Input("roi_series", fan_in=_measurements_of_sample),),
              config={"insitu": {"timezone", "attenuation"}}, kinds=("parquet", "csv"), enabled=has_insitu,
              job="insitu_sample_job",
              checks=(Check("continuous_across_changes", "After correction, the reference intensity jumps by at most "
                            "5 % at every attenuator change."),
                      Check("all_measurements_included", "Every measurement folder of the sample has a roi_series in "
                            "the series."))),
], jobs=[
    Job("insitu_measurement_job", "Correct one in-situ measurement's frames and compute its ROI series.",
        stage="measurements"),
    Job("insitu_sample_job", "Stitch one sample's measurements and correct the attenuator changes.", stage="samples"),
]))
