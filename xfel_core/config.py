"""The beamtime configuration (`beamtime.yaml`): loading, validation and derived paths.

One YAML file describes one beamtime. Its path comes from the environment variable
``XFEL_BEAMTIME`` (see :func:`beamtime_path_from_env`). Relative paths inside it are taken
relative to the folder holding the YAML file. Every key is validated on load: an unknown,
missing or wrong key is a :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .exceptions import ConfigError

ENV_VAR = "XFEL_BEAMTIME"
DEFAULT_BEAMTIME = Path("demo") / "beamtime" / "beamtime.yaml"
RUN_KEY_RE = re.compile(r"^r(\d{4})$")
#: The frame types of ``frame_pattern: auto`` (from the bunch pattern: :mod:`xfel_core.euxfel.bunch_pattern`).
AUTO_FRAME_TYPES = ("pumped", "unpumped", "dark")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DetectorConfig(_Strict):
    """Which detector to read: its type, raw or corrected data, source names, file names and module geometry.

    ``type`` picks the detector's entry in :mod:`xfel_core.euxfel.detectors`; ``name``, ``source``,
    ``aggregator``, ``modules`` and ``module_shape`` default to that entry's (the keys stay there to
    override it, for a detector named otherwise)."""

    #: DSSC1M, AGIPD1M, AGIPD500K, LPD1M or JUNGFRAU.
    type: Literal["DSSC1M", "AGIPD1M", "AGIPD500K", "LPD1M", "JUNGFRAU"] = "DSSC1M"
    #: raw: the RAW files of the run folder; corrected: the CORR files of its proc folder (calibrated float32
    #: with a per-pixel mask: masked pixels are left out of the sums and counts of every pixel).
    data: Literal["raw", "corrected"] = "raw"
    #: Detector name in the source names; default: the type's (``SCS_DET_DSSC1M-1``).
    name: str = "SCS_DET_DSSC1M-1"
    #: Karabo source of one module; ``{module}`` is the module number (0-15).
    source: str = "SCS_DET_DSSC1M-1/DET/{module}CH0:xtdf"
    #: Aggregator part of the raw file names; ``RAW-R0042-DSSC07-S00000.h5`` for module 7.
    aggregator: str = "DSSC{module:02d}"
    #: Module numbers (0-15) to process; default: all the type's (16; JUNGFRAU: 1-8).
    modules: list[Annotated[int, Field(ge=0, le=15)]] = Field(
        default_factory=lambda: list(range(16)), min_length=1
    )
    #: Pixels of one module as (y, x), slow-scan then fast-scan.
    module_shape: tuple[int, int] = (128, 512)
    #: Corrected data: the mask bits that exclude a pixel (the correction's bad-pixel reasons); null: any.
    mask_bits: int | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _from_type(cls, data):
        """The type's defaults for the keys not given (source names follow ``name`` and ``data``)."""
        from .euxfel.detectors import KINDS

        if not isinstance(data, dict) or data.get("type", "DSSC1M") not in KINDS:
            return data  # the type's own validation names the problem
        k = KINDS[data.get("type", "DSSC1M")]
        out = dict(data)
        out.setdefault("name", k.detector_name)
        pattern = k.corr_source if out.get("data") == "corrected" else k.raw_source
        out.setdefault("source", pattern.replace("{name}", str(out["name"])))
        out.setdefault("aggregator", k.aggregator)
        out.setdefault("modules", list(range(k.first_module, k.first_module + k.modules)))
        out.setdefault("module_shape", k.module_shape)
        return out

    @property
    def kind(self):
        """The detector's entry in :mod:`xfel_core.euxfel.detectors`."""
        from .euxfel.detectors import KINDS

        return KINDS[self.type]

    @property
    def corrected(self) -> bool:
        return self.data == "corrected"

    @field_validator("modules")
    @classmethod
    def _unique_modules(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"module numbers repeat: {v}")
        return sorted(v)

    def source_for(self, module: int) -> str:
        return self.source.format(module=module)

    def aggregator_for(self, module: int) -> str:
        return self.aggregator.format(module=module)


class Binning(_Strict):
    """How scan values become scan points: exactly one of bin_width, nbins, values, edges or auto."""

    #: The scan's steps found from the values themselves (``binning: auto``; see README, "Scan steps found
    #: from the motor"), as EXtra's Scan component finds them; a run without steps is one scan point.
    auto: bool = False
    #: With auto: the motor's usable resolution (a new step starts where a value leaves the step's start by
    #: this much); null: half the typical step, found from the values.
    resolution: float | None = Field(default=None, gt=0)
    #: With auto: the fewest trains (events) a step keeps; null: half the mean step length, at least 2.
    min_trains: int | None = Field(default=None, ge=1)
    #: Scan points at multiples of this width (each value goes to the nearest one).
    bin_width: float | None = Field(default=None, gt=0)
    #: This many equal bins over the run's range of values.
    nbins: int | None = Field(default=None, ge=1)
    #: The listed scan values (a train's value within ``tolerance`` of one of them).
    values: list[float] | None = Field(default=None, min_length=1)
    #: With ``values``: the largest distance of a train's value from a listed value.
    tolerance: float = Field(default=1e-6, ge=0)
    #: Bin edges, increasing: a value in [edges[i], edges[i+1]) goes to scan point i (the last
    #: bin includes its upper edge); values outside are not used. Scan points are the bin centres.
    edges: list[float] | None = Field(default=None, min_length=2)

    @model_validator(mode="before")
    @classmethod
    def _auto(cls, data):
        return {"auto": True} if data == "auto" else data

    @model_validator(mode="after")
    def _exactly_one(self) -> Binning:
        given = [k for k in ("bin_width", "nbins", "values", "edges") if getattr(self, k) is not None]
        given += ["auto"] if self.auto else []
        if len(given) != 1:
            raise ValueError(
                "give exactly one of bin_width, nbins, values, edges or auto "
                f"(given: {', '.join(given) if given else 'none'})"
            )
        if not self.auto and (self.resolution is not None or self.min_trains is not None):
            raise ValueError("resolution and min_trains are for binning auto")
        if self.edges is not None and not all(a < b for a, b in zip(self.edges, self.edges[1:])):
            raise ValueError(f"edges must increase: {self.edges}")
        return self


class LaserDelayConfig(_Strict):
    """The pump-probe delay as EXtra's OpticalLaserDelay builds it, in ps: (stage - ref_stage) x 2 mm of light
    path per mm - (trigger - ref_trigger) + (BAM - ref_bam) - ref_delay; with a BAM, per X-ray pulse."""

    #: The optical delay line's motor (its position in mm; the light passes twice).
    stage_source: str | None = None
    #: Key of the delay line's position in its source.
    stage_key: str = "actualPosition"
    #: Delay line position (mm) at time zero.
    ref_stage: float = 0.0
    #: The laser's electronic trigger delay (ps), subtracted.
    trigger_source: str | None = None
    #: Key of the trigger delay in its source.
    trigger_key: str = "currentOpticalDelay"
    #: Trigger delay (ps) at time zero.
    ref_trigger: float = 0.0
    #: The bunch arrival monitor (fs, two values per bunch position): each X-ray pulse's own arrival time.
    bam_source: str | None = None
    #: Key of the bunch arrival times in the BAM's source.
    bam_key: str = "data.absoluteTD"
    #: Bunch arrival time (fs) at time zero.
    ref_bam: float = 0.0
    #: Subtracted from the total (ps): the delay at time zero.
    ref_delay: float = 0.0

    @model_validator(mode="after")
    def _some_source(self) -> LaserDelayConfig:
        if not (self.stage_source or self.trigger_source or self.bam_source):
            raise ValueError("give at least one of stage_source, trigger_source and bam_source")
        return self


class ScanVariableConfig(_Strict):
    """The per-train scan variable (for example the pump-probe delay) and its binning: a key of a source, or
    the laser delay built from the machine's data (``delay``)."""

    #: Karabo source of the per-train scan variable (e.g. the delay stage), with ``key``.
    source: str | None = None
    #: Key of the scan variable in ``source`` (e.g. ``actualPosition``).
    key: str | None = None
    #: The optical laser delay (ps) from the delay stage, the trigger and the BAM, instead of source and key.
    delay: LaserDelayConfig | None = None
    #: Units of the scan variable (the cube's axis and the plots).
    units: str = ""
    #: How the scan values become scan points (one of bin_width, nbins, values, edges, auto).
    binning: Binning

    @model_validator(mode="after")
    def _one_kind(self) -> ScanVariableConfig:
        if (self.delay is None) == (self.source is None or self.key is None):
            raise ValueError("give either source and key, or delay")
        if self.delay is not None and self.delay.bam_source and self.binning.auto:
            raise ValueError("binning: auto finds steps of a motor; per-pulse delays (delay.bam_source) need "
                             "bin_width, nbins, edges or values")
        return self


class FramemaskConfig(_Strict):
    """Rules that reject frames: low X-ray pulse energy and explicit exclusions."""

    #: Source and key of the gas monitor's pulse energy per pulse (uJ), one row per train.
    xgm_source: str | None = "SCS_BLU_XGM/XGM/DOOCS:output"
    #: Key of the pulse energies in ``xgm_source``.
    xgm_key: str = "data.intensitySa3TD"
    #: Frames of X-ray pulses below this energy (uJ) are rejected; null: no energy rule.
    min_pulse_energy_uj: float | None = None
    #: Train IDs whose frames are all rejected.
    exclude_trains: list[int] = Field(default_factory=list)
    #: Frame positions within every train to reject (0 is the first frame of a train).
    exclude_frames: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)


class BunchPatternConfig(_Strict):
    """Where the timeserver's bunch pattern is, and how its pulses map to detector frames (``frame_pattern: auto``)."""

    #: The timeserver (control data) or its pulse-pattern output (instrument data) holding the table.
    source: str
    #: Its key: ``bunchPatternTable`` (control) or ``data.bunchPatternTable`` (instrument).
    key: str = "bunchPatternTable"
    #: Which SASE's X-ray pulses the detector sees (1, 2 or 3).
    sase: int = Field(ge=1, le=3)
    #: The pump-probe laser seed (``LP_SCS``, ``LP_SPB``, ``LP_FXE``, ``LP_SQS``, ``LP_SASE2``...); auto: the
    #: instrument's, from the source name (EXtra's rule).
    laser: str = "auto"
    #: The laser's first pulse is this many FEL pulse spacings after the first FEL pulse (EXtra's pulse_offset).
    laser_offset: float = 0.0
    #: Bunch position of a train's first detector frame; null: the train's first FEL pulse.
    first_frame: int | None = Field(default=None, ge=0, lt=2700)
    #: Bunch positions between detector frames; null: the FEL pulse spacing (a frame per FEL pulse).
    frame_stride: int | None = Field(default=None, ge=1)


class GainMapConfig(_Strict):
    """A per-pixel gain or flat-field map per module, applied after the dark subtraction."""

    #: HDF5 file of the maps (relative paths: to the folder of beamtime.yaml).
    file: Path
    #: Dataset of one module's (y, x) map; ``{module}`` is the module number.
    dataset: str = "module_{module:02d}/gain"
    #: multiply: corrected = (raw - dark) * map (a relative gain); divide: ... / map (a flat-field).
    operation: Literal["multiply", "divide"] = "multiply"


class ChecksConfig(_Strict):
    """Bounds of the data-quality checks that run with the assets."""

    #: Fraction of a run's frames the framemask must keep (a blocking check of `framemask`).
    min_kept_fraction: float = Field(default=0.05, ge=0, le=1)
    #: Median dark noise (ADU) of a module must lie in [low, high] (a blocking check of `dark`).
    dark_noise_adu: tuple[float, float] = (0.05, 200.0)
    #: Fraction of the control data's trains each module must have (non-blocking check `modules_cover_run` of `raw_run`).
    min_module_coverage: float = Field(default=0.95, ge=0, le=1)

    @field_validator("dark_noise_adu")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] < v[1]:
            raise ValueError(f"need 0 <= low < high, got {list(v)}")
        return v


class CompletenessConfig(_Strict):
    """When a raw run folder is complete enough to process (the sensors' rule; see README, "When a run is complete").

    A run is taken when every configured module and the control data have files, nothing in the
    folder changed for ``settle_seconds``, every file opens with a train index whose entries point
    at data that is there, the facility's marker or command (if configured) says so, the folder
    is unchanged between two sensor ticks, and (waited for up to ``content_wait_seconds``) every
    aggregator's sequence files are contiguous, the modules' last sequence numbers are within
    ``sequences_within`` of each other and every module has ``checks.min_module_coverage`` of the
    control data's trains.
    """

    #: Seconds without any change in the run folder (a new file, a file growing) before it is taken.
    settle_seconds: float = Field(default=30.0, ge=0)
    #: The detector modules' last sequence files may differ by at most this many.
    sequences_within: int = Field(default=1, ge=0)
    #: How long a settled run whose content rules fail (a module short of trains, a sequence file
    #: missing) is waited for before it is processed anyway (then raw_run's check shows it red).
    content_wait_seconds: float = Field(default=600.0, ge=0)
    #: The facility's sign that a run is complete: a glob relative to the run folder that must match
    #: a file ({run}: r0042, {number}: 42), e.g. "../.migrated/{run}.done"; null: none.
    marker: str | None = None
    #: A command (no shell; {run_dir}, {run}, {number} are filled in) that must print "complete"; null: none.
    command: str | None = None
    #: Seconds the completeness ``command`` may take (then the run waits).
    command_timeout_s: float = Field(default=30.0, gt=0)
    #: Seconds between the new-run sensor's ticks (each tick also starts the next stage of the runs
    #: being processed, so this bounds the wait between stages).
    sensor_interval_s: int = Field(default=1, ge=1)
    #: Seconds between the refresh sensor's evaluations (a run's user variables once its outputs are made,
    #: the run tables after any change); each reads the instance's records of every input.
    refresh_interval_s: int = Field(default=30, ge=1)


class ExecutionConfig(_Strict):
    """How Dagster runs the steps."""

    #: Steps at once in the multiprocess executor; null: the number of CPUs.
    max_concurrent: int | None = Field(default=None, ge=1)
    #: Threads of the binning kernel within one step (steps already run one per CPU).
    kernel_threads: int = Field(default=1, ge=1)
    #: Module steps (dark, preprocessed_module) at once across all Dagster runs (a concurrency
    #: pool); null: the number of CPUs. Bounds the memory a whole-beamtime backfill takes.
    max_module_steps: int | None = Field(default=None, ge=1)
    #: Retries of a step that failed with an I/O error, with exponential backoff from retry_delay_s.
    retries: int = Field(default=2, ge=0)
    #: Seconds before the first retry (doubled for each next one).
    retry_delay_s: float = Field(default=2.0, ge=0)
    #: How the new-run sensor launches a complete run: "stages": each stage's Dagster runs (inputs,
    #: modules, cube) as soon as the stage before has succeeded, seconds apart; "backfill": one
    #: asset backfill (listed under Backfills; one backfill-daemon round per stage).
    new_runs: Literal["stages", "backfill"] = "stages"
    #: Seconds one user variable may take for one run (its own process, killed then: that variable's
    #: partition fails, naming it and this limit; the run's other variables go on).
    variable_timeout_s: float = Field(default=600.0, gt=0)
    #: Memory one user variable may allocate for one run, in GiB, beyond what its process holds when it
    #: starts (a variable over it fails alone with a MemoryError naming it and this limit).
    variable_memory_gb: float = Field(default=8.0, gt=0)

    def resolved_max_module_steps(self) -> int:
        return self.max_module_steps or os.cpu_count() or 1

    def resolved_max_concurrent(self) -> int:
        return self.max_concurrent or os.cpu_count() or 1


def _ordered_range(v: tuple[int, int], what: str) -> tuple[int, int]:
    if not 0 <= v[0] < v[1]:
        raise ValueError(f"{what} must be [first, end) with 0 <= first < end, got {list(v)}")
    return v


class Rect(_Strict):
    """A rectangle of detector pixels: rows y[0] <= row < y[1], columns x[0] <= column < x[1]."""

    #: Rows [first, last) of the rectangle, in the detector's pixels.
    y: tuple[int, int]
    #: Columns [first, last) of the rectangle, in the detector's pixels.
    x: tuple[int, int]

    @field_validator("y", "x")
    @classmethod
    def _ordered(cls, v: tuple[int, int], info) -> tuple[int, int]:
        return _ordered_range(v, info.field_name)

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(*self.y), slice(*self.x)

    @property
    def npixels(self) -> int:
        return (self.y[1] - self.y[0]) * (self.x[1] - self.x[0])


RoiRole = Literal["com", "fwhm", "intensity", "background"]


class Roi(Rect):
    """A named region of interest and what is computed in it (the seed's coloured ROIs).

    com: centre of mass (yellow); fwhm: FWHM of the peak along y and x (orange);
    intensity: integrated counts (red, green); background: mean counts per pixel, subtracted
    (times the area) from the intensity ROIs as ``<name>_net``.
    """

    #: The ROI's name (letters, digits and _; starts with a letter): its columns are named after it.
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    #: What is computed in it: com, fwhm, intensity or background.
    role: RoiRole


class AttenuationOverride(_Strict):
    """A manual correction of one attenuator change of a sample (the seed's hand-picked points)."""

    #: The sample whose attenuator change this corrects.
    sample: str
    #: The change happens before the first frame at or after this time: UNIX seconds, or an ISO
    #: date-time (in insitu.timezone unless it carries its own offset).
    time: float | str
    #: Intensities from this frame on are multiplied by this factor relative to the frames
    #: before; null removes a change found automatically.
    factor: float | None = Field(gt=0)


class AttenuationConfig(_Strict):
    """How attenuator changes are found and corrected in `attenuation_corrected_series`."""

    #: ratio: the factor of each change is the ratio of the intensities on either side (the
    #: seed's way; robust to inexact nominal transmissions); header: 1 / the headers' transmission ratio.
    method: Literal["ratio", "header"] = "ratio"
    #: Points on each side of a change that a straight line (in log intensity against time) is fitted to.
    points: int = Field(default=5, ge=1)
    #: With method ratio, changes across a gap in time longer than this use the header's ratio
    #: where there is one (the intensity may really change during a pause).
    max_gap_s: float = Field(default=10.0, gt=0)
    #: The intensity ROI whose series finds and measures the changes; null: the first intensity ROI.
    reference_roi: str | None = None
    #: Without transmissions in the headers: a jump of the reference intensity by more than this
    #: fraction between neighbouring frames (and 8 x its robust noise) is an attenuator change.
    step_threshold: float = Field(default=0.3, gt=0)
    overrides: list[AttenuationOverride] = Field(default_factory=list)


class InsituConfig(_Strict):
    """In-situ TIFF series (the SPring-8 BL11XU layout): <raw_root>/<sample>/<sample>_<measurement>/*.tif."""

    #: Folder of the sample folders.
    raw_root: Path
    #: Outputs go to <processed_root>/<sample>/<measurement>/; null: <beamtime processed_root>/insitu.
    processed_root: Path | None = None
    #: IANA time zone of the date-times in the TIFF headers (SPring-8: Asia/Tokyo).
    timezone: str = "Asia/Tokyo"
    #: Folder name of the flat-field TIFFs: in the sample folder, else in raw_root.
    flatfield: str = "flatfield"
    #: 3 x 3 median filter: bad_pixels replaces only bad pixels (dead or hot in the flat-field,
    #: negative, at the count cutoff) by their neighbourhood's median; all filters every pixel
    #: (the seed's parse.py, which also smooths the peak); none: no filter.
    median_filter: Literal["bad_pixels", "all", "none"] = "bad_pixels"
    #: A pixel whose flat-field response is outside [low, high] x the median response is bad.
    flatfield_good_range: tuple[float, float] = (0.5, 1.5)
    #: Detector areas without signal: their mean counts per pixel in each frame is subtracted.
    background_regions: list[Rect] = Field(default_factory=list)
    #: ROIs of roi_series; ignored when roi_file is given.
    rois: list[Roi] = Field(default_factory=list)
    #: A ROI file written by `xfel-assets roi save` (relative: to the folder of beamtime.yaml).
    roi_file: Path | None = None
    attenuation: AttenuationConfig = Field(default_factory=AttenuationConfig)
    #: A measurement is complete when its newest TIFF is at least this old (and the folder was
    #: unchanged for one sensor tick): an acquisition in progress is not taken half-way.
    settle_seconds: float = Field(default=30.0, ge=0)
    #: Frames read and corrected at a time.
    chunk_frames: int = Field(default=64, ge=1)
    #: insitu_frames refuses to replace an existing output made from other files or settings
    #: unless this is true (or the run config of the asset says overwrite: true).
    overwrite: bool = False

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Asia/Tokyo or UTC)") from None
        return v

    @field_validator("flatfield_good_range")
    @classmethod
    def _range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] < 1 < v[1]:
            raise ValueError(f"need 0 <= low < 1 < high, got {list(v)}")
        return v

    @field_validator("rois")
    @classmethod
    def _unique_rois(cls, v: list[Roi]) -> list[Roi]:
        names = [r.name for r in v]
        if len(set(names)) != len(names):
            raise ValueError(f"ROI names repeat: {names}")
        return v


class PalLayoutConfig(_Strict):
    """PAL-XFEL raw files: <raw_root>/run=NNN/scan=NNN/pNNNN.h5 (see README, 'Event files')."""

    #: Experimental hutch in the file paths (``eh1``), as the PAL-XFEL toolkit's config ``hutch``.
    hutch: str = "eh1"
    #: Detector name in the files (``jungfrau2``), as the toolkit's ``detector``.
    detector: str = "jungfrau2"
    #: Beam-position monitor whose sum is I0 (``qbpm1``).
    qbpm: str = "qbpm1"
    #: The X-ray line: HX (hard) or SX (soft), as the PAL-XFEL toolkit's config ``xray``.
    xray_line: Literal["HX", "SX"] = "HX"
    #: The pump laser's rate setting, as the toolkit's ``pump_setting`` (0HZ, 10HZ, 15HZ, 20HZ, 30HZ, 60HZ):
    #: a shot is pumped where the metadata column ``timestamp_info.RATE_<xray_line>_<pump_rate>`` is true;
    #: 0HZ: no pump (every shot laser off).
    pump_rate: str = "15HZ"
    #: Metadata column of the pump-laser flag, instead of the one xray_line and pump_rate name; null: that one.
    laser_column: str | None = None
    #: Metadata columns that may hold the scan value, by priority (the toolkit's order: the sample angle
    #: th_value before the delay delay_value): the first present whose values vary over the run, else the
    #: first present.
    scan_columns: list[str] = Field(default_factory=lambda: ["th_value", "delay_value"], min_length=1)
    #: The one metadata column of the scan value (instead of scan_columns); null: scan_columns decide.
    scan_column: str | None = None
    #: Metadata column of a per-shot timing-tool correction (added to the scan value); null: none.
    timing_tool_column: str | None = None

    @field_validator("pump_rate", mode="before")
    @classmethod
    def _rate(cls, v) -> str:
        """15HZ as the toolkit writes it; 15, "15hz" and "15 Hz" are read as 15HZ, 0 as 0HZ."""
        text = str(v).replace(" ", "").upper()
        text = text if text.endswith("HZ") else text + "HZ"
        if isinstance(v, bool) or not re.fullmatch(r"\d+HZ", text):
            raise ValueError(f"pump_rate {v!r} is not a rate setting such as 15HZ (0HZ: no pump)")
        return text

    def laser_name(self) -> str | None:
        """The metadata column of the pump flag; None where there is no pump (0HZ)."""
        if self.laser_column is not None:
            return self.laser_column
        return None if self.pump_rate == "0HZ" else f"timestamp_info.RATE_{self.xray_line}_{self.pump_rate}"


class GenericLayoutConfig(_Strict):
    """One HDF5 file per run; which dataset holds what (LCLS-style and other event files)."""

    #: File of a run, relative to events.raw_root; ``{run}`` is the run number.
    file: str = "r{run:04d}.h5"
    #: Images (events, y, x).
    images: str
    #: I0 per event.
    i0: str
    #: Scan variable per event (e.g. the nominal delay).
    scan: str
    #: Timestamp per event (seconds); null: none.
    timestamps: str | None = None
    #: Pump laser on (nonzero) / off per event; null: all on.
    laser: str | None = None
    #: Timing-tool correction per event (added to the scan value); null: none.
    timing_tool: str | None = None


class AnomalyConfig(_Strict):
    """Shot rejection rules (the PAL-XFEL toolkit's filters); null switches a rule off.

    Robust statistics throughout: median and 1.4826 x the median absolute deviation (sigma).
    """

    #: Keep shots whose I0 is within median +- i0_sigma x sigma.
    i0_sigma: float | None = Field(default=4.0, gt=0)
    #: ... and at least this I0 (beam off, monitor dropouts).
    i0_min: float | None = None
    #: Keep shots whose ratio_roi intensity / I0 is within median +- ratio_sigma x sigma (per scan point and laser).
    ratio_sigma: float | None = Field(default=5.0, gt=0)
    #: The intensity ROI of the ratio rule; null: the first ROI.
    ratio_roi: str | None = None
    #: Keep shots whose total intensity lies within linear_sigma x sigma of a robust straight line
    #: against I0 (per scan point and laser).
    linear_sigma: float | None = Field(default=5.0, gt=0)
    #: Reject frames with a pixel at or above this (dark-subtracted) value; null: no rule.
    saturation: float | None = None
    #: Reject frames whose total intensity is below this fraction of the run's median total.
    empty_fraction: float | None = Field(default=0.1, ge=0)
    #: Mask pixels whose mean (dark run's, else the run's) exceeds this factor x their 3 x 3 neighbourhood's median (+1).
    hot_pixel_factor: float | None = Field(default=5.0, gt=1)


class ExtraGeomLayout(_Strict):
    """A European XFEL multi-module detector's pixel positions, from extra-geom (its ``to_pyfai_detector``)."""

    #: extra-geom's geometry class of the detector.
    detector: Literal["DSSC_1M"] = "DSSC_1M"
    #: The four quadrants' positions (x, y) in mm, as extra-geom's ``from_quad_positions`` takes them; the beam
    #: is at the origin of these coordinates.
    quadrant_positions_mm: list[tuple[float, float]] = Field(min_length=4, max_length=4)
    #: The detector group's HDF5 geometry file (extra-geom's ``from_h5_file_and_quad_positions``); null: the
    #: nominal module layout from the quadrant positions alone.
    geometry_file: Path | None = None


class GeometryConfig(_Strict):
    """Detector geometry for the azimuthal integration (pyFAI), in SI units and pixels: a PONI file, or the keys
    of a detector normal to the beam (distance, pixel size, beam centre)."""

    #: A PONI file as pyFAI-calib2 writes it: distance, PONI, the three tilts, the detector (pixel sizes)
    #: and the wavelength, instead of distance_m, pixel_size_m and beam_centre_px.
    poni_file: Path | None = None
    #: Sample-detector distance in metres (without a PONI file).
    distance_m: float | None = Field(default=None, gt=0)
    #: Pixel size (y, x) in metres.
    pixel_size_m: tuple[float, float] | None = None
    #: Beam centre (y, x) on the detector, in pixels, as an index of pixel centres: the first pixel's centre
    #: is (0, 0), its outer corner (-0.5, -0.5). pyFAI's PONI is (beam_centre_px + 0.5) x pixel size; a
    #: Fit2D or pyFAI-calib centre (counted from the corner) is this + 0.5.
    beam_centre_px: tuple[float, float] | None = None
    #: The DSSC small data's modules placed by extra-geom (instead of pixel_size_m and beam_centre_px: the
    #: hexagonal pixels where they are, the beam at the geometry's origin); with distance_m and the wavelength.
    extra_geom: ExtraGeomLayout | None = None
    #: X-ray wavelength (m); or give energy_kev. With a PONI file: replaces its wavelength.
    wavelength_m: float | None = Field(default=None, gt=0)
    #: X-ray photon energy (keV), instead of wavelength_m.
    energy_kev: float | None = Field(default=None, gt=0)
    #: HDF5 file with a (y, x) mask (nonzero: masked pixel) in mask_dataset; null: none.
    mask_file: Path | None = None
    #: Dataset of the mask in ``mask_file``.
    mask_dataset: str = "mask"
    #: Radial bins and unit of the profile.
    npt: int = Field(default=200, ge=2)
    #: Unit of the radial axis: q_A^-1, q_nm^-1, 2th_deg or r_mm (pyFAI's).
    unit: Literal["q_A^-1", "q_nm^-1", "2th_deg", "r_mm"] = "q_A^-1"
    #: Radial range in `unit`; null: the detector's whole range.
    radial_range: tuple[float, float] | None = None
    #: Set when the config is read, never by hand: a hash of the contents of poni_file and mask_file, so that
    #: a new calibration in the same file changes the configuration version of what reads the geometry.
    files_digest: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _digest_files(cls, data):
        if not isinstance(data, dict):
            return data
        layout = data.get("extra_geom")
        layout_file = layout.get("geometry_file") if isinstance(layout, dict) else getattr(layout, "geometry_file", None)
        if data.get("poni_file") or data.get("mask_file") or layout_file:
            from .hashing import content_hash, digest

            parts = [content_hash(data.get("poni_file")), content_hash(data.get("mask_file"))]
            data = dict(data, files_digest=digest(*parts, *([content_hash(layout_file)] if layout_file else []), n=12))
        return data

    @model_validator(mode="after")
    def _one_geometry(self) -> GeometryConfig:
        keys = {"distance_m": self.distance_m, "pixel_size_m": self.pixel_size_m, "beam_centre_px": self.beam_centre_px}
        if self.extra_geom is not None:
            placed = [k for k in ("pixel_size_m", "beam_centre_px", "poni_file") if getattr(self, k) is not None]
            if placed:
                raise ValueError(f"extra_geom places the pixels and the beam: give no {', '.join(placed)}")
            if self.distance_m is None:
                raise ValueError("extra_geom needs distance_m")
        elif self.poni_file is not None:
            given = [k for k, v in keys.items() if v is not None]
            if given:
                raise ValueError(f"give poni_file or {', '.join(keys)}, not both (given: poni_file, {', '.join(given)})")
            if self.wavelength_m is not None and self.energy_kev is not None:
                raise ValueError("give at most one of wavelength_m or energy_kev")
            return self
        missing = [k for k, v in keys.items() if v is None]
        if self.extra_geom is None and self.poni_file is None and missing:
            raise ValueError(f"give poni_file, or {', '.join(keys)} (missing: {', '.join(missing)})")
        if (self.wavelength_m is None) == (self.energy_kev is None):
            raise ValueError("give exactly one of wavelength_m or energy_kev")
        return self

    @property
    def wavelength(self) -> float | None:
        """Wavelength in metres (None: a PONI file's own)."""
        if self.wavelength_m is not None:
            return self.wavelength_m
        return 12.398419843320026e-10 / self.energy_kev if self.energy_kev is not None else None


class NormalisationConfig(_Strict):
    """How event images and profiles are normalised: x mean(I0) / I0, or by a region's intensity."""

    #: i0: each shot x mean(I0) / its I0; region: by a ROI's intensity; none: not normalised.
    by: Literal["i0", "region", "none"] = "i0"
    #: With by: region, the ROI whose intensity normalises (x its run mean / the shot's).
    region: str | None = None


class EventsConfig(_Strict):
    """Per-event (shot) files: PAL-XFEL's layout or a generic per-run HDF5 file."""

    #: pal: PAL-XFEL's run=NNN/scan=NNN/pNNNN.h5 files; generic: one HDF5 file per run (see generic).
    layout: Literal["pal", "generic"]
    #: Folder of the runs (pal: run=NNN folders; generic: the files of `generic.file`).
    raw_root: Path
    #: PAL-XFEL's file layout (for layout: pal).
    pal: PalLayoutConfig = Field(default_factory=PalLayoutConfig)
    #: Which dataset holds what (for layout: generic).
    generic: GenericLayoutConfig | None = None
    #: A run of the same layout whose mean image is subtracted (the dark); null: none.
    dark_run: int | None = Field(default=None, ge=0)
    #: Runs that are not data: the sensor and the commands leave them out (as the dark run).
    ignore_runs: list[int] = Field(default_factory=list)
    #: ROIs in the detector's pixels: per-shot sums and the quantities of their roles.
    rois: list[Roi] = Field(default_factory=list)
    #: A ROI file (`xfel-assets roi save`); replaces rois.
    roi_file: Path | None = None
    #: The detector geometry of the radial profiles (pyFAI).
    geometry: GeometryConfig
    anomalies: AnomalyConfig = Field(default_factory=AnomalyConfig)
    normalisation: NormalisationConfig = Field(default_factory=NormalisationConfig)
    #: Binning of the (timing-tool corrected) scan value for event_cube.
    binning: Binning
    #: Units of the scan value (the cube's axis).
    scan_units: str = ""
    #: The timing-tool value times this is added to the scan value (e.g. 1e-3 for fs to ps).
    timing_tool_scale: float = 1.0
    #: Events read at a time.
    chunk_events: int = Field(default=64, ge=1)

    @model_validator(mode="after")
    def _layout_section(self) -> EventsConfig:
        if self.layout == "generic" and self.generic is None:
            raise ValueError("layout generic needs the generic section (which dataset holds what)")
        if self.normalisation.by == "region" and self.normalisation.region is None:
            raise ValueError("normalisation.by region needs normalisation.region (a ROI name)")
        return self


class DsscSmalldataConfig(_Strict):
    """Per-frame small data of the DSSC runs (dssc_smalldata, run x module): ROI sums and radial profiles."""

    #: ROIs in each module's own pixels (y, x), the same on every module.
    rois: list[Roi] = Field(default_factory=list)
    #: A ROI file (``xfel-assets roi save``); replaces rois.
    roi_file: Path | None = None
    #: Geometry of one module for its radial profile (pixel_size_m ~ (236e-6, 204e-6) for the DSSC's
    #: hexagonal pixels); beam_centre_px in that module's pixels (it may lie outside the module).
    #: null: no radial profile.
    geometry: GeometryConfig | None = None
    #: Beam centre [y, x] per module (key "00".."15") where it differs from geometry.beam_centre_px.
    beam_centres: dict[str, tuple[float, float]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _centres_need_keys(self) -> DsscSmalldataConfig:
        if self.beam_centres and self.geometry is not None and self.geometry.beam_centre_px is None:
            raise ValueError("beam_centres replace geometry.beam_centre_px per module: with geometry.poni_file or "
                             "geometry.extra_geom give none")
        return self


SLURM_TIME_RE = re.compile(r"^(\d+-)?\d+(:\d{2}){0,2}$")
SLURM_MEM_RE = re.compile(r"^\d+[KMGT]?$")


class SlurmJobSize(_Strict):
    """What one SLURM job of an asset asks for."""

    #: CPUs per job.
    cpus: int = Field(default=2, ge=1)
    #: Memory per job, SLURM's syntax: 8000 (MB), 8G.
    mem: str = "8G"
    #: Wall-time limit, SLURM's syntax: MM, HH:MM:SS or D-HH:MM:SS.
    time_limit: str = "01:00:00"

    @field_validator("time_limit", mode="before")
    @classmethod
    def _not_sexagesimal(cls, v):
        if isinstance(v, int):  # YAML 1.1 reads 1:00:00 as the base-60 number 3600
            raise ValueError(f"YAML read this as the number {v}: quote the time limit, e.g. \"01:00:00\"")
        return v

    @field_validator("time_limit")
    @classmethod
    def _time(cls, v: str) -> str:
        if not SLURM_TIME_RE.match(v):
            raise ValueError(f"not a SLURM time limit (MM, HH:MM:SS or D-HH:MM:SS): {v!r}")
        return v

    @field_validator("mem")
    @classmethod
    def _mem(cls, v: str) -> str:
        if not SLURM_MEM_RE.match(v):
            raise ValueError(f"not a SLURM memory size (e.g. 8000, 8G): {v!r}")
        return v


class SlurmJobsConfig(_Strict):
    """Job size per asset kind."""

    #: Job size of a DSSC module step (preprocessed_module).
    preprocessed_module: SlurmJobSize = Field(default_factory=SlurmJobSize)
    #: Job size of an event run's small data (event_smalldata).
    event_smalldata: SlurmJobSize = Field(default_factory=SlurmJobSize)
    #: Job size of an in-situ measurement's frames (insitu_frames).
    insitu_frames: SlurmJobSize = Field(default_factory=SlurmJobSize)


#: The assets that run as SLURM jobs with ``compute: slurm`` (marked ``slurm`` in the workflow model).
SLURM_ASSETS = tuple(SlurmJobsConfig.model_fields)


class SlurmSshConfig(_Strict):
    """The cluster's login node, reached over SSH with a key (no prompts: Dagster runs unattended)."""

    #: The login node's host name.
    host: str
    #: Its SSH port.
    port: int = Field(default=22, ge=1, le=65535)
    #: User name on the cluster.
    user: str
    #: Private key file; null: the SSH agent's or ~/.ssh's default keys.
    key_path: Path | None = None
    #: Known-hosts file holding the login node's host key; null: ~/.ssh/known_hosts. Host keys are always checked.
    known_hosts: Path | None = None


class SlurmConfig(_Strict):
    """Where and how the heavy assets run as SLURM jobs (``compute: slurm``).

    Raw data, processed data and this file must be on a file system shared by the Dagster
    machine and the cluster, at the same paths.
    """

    #: The login node the jobs are submitted from.
    ssh: SlurmSshConfig
    #: Virtual environment on the cluster with this release of xfel-assets installed.
    python_env: Path
    #: Folder on the cluster for job scripts, logs and Pipes messages (one subfolder per Dagster run).
    remote_base: Path
    #: SLURM partition of the jobs; empty: the cluster's default.
    partition: str = ""
    #: SLURM account charged; null: the user's default.
    account: str | None = None
    #: SLURM quality of service; null: the default.
    qos: str | None = None
    #: SLURM jobs queued or running at once, across all Dagster runs (a Dagster concurrency pool).
    max_jobs: int = Field(default=4, ge=1)
    #: Seconds between the first job-state polls (backing off to 4x).
    poll_interval_s: float = Field(default=2.0, gt=0)
    #: A job not finished after this many seconds is cancelled and the step failed.
    job_timeout_s: int = Field(default=86400, ge=1)
    jobs: SlurmJobsConfig = Field(default_factory=SlurmJobsConfig)

    @field_validator("remote_base", "partition", "account", "qos")
    @classmethod
    def _shell_safe(cls, v, info):
        # dagster-slurm writes these into job scripts and sbatch command lines unquoted: a quote,
        # space or $ would break them, and a crafted value would run a command on the cluster.
        if v is not None and not SHELL_SAFE.fullmatch(str(v)):
            raise ValueError(f"{str(v)!r} holds a character that is not safe in a shell command (only letters, "
                             "digits and . _ / + , : @ = - are allowed)")
        return v


#: Characters allowed in values that tools other than ours put into shell commands unquoted.
SHELL_SAFE = re.compile(r"[A-Za-z0-9._/+,:@=-]*")


class BeamtimeConfig(_Strict):
    """One beamtime: where its data lives and how its runs are reduced."""

    #: The beamtime's name (in the previews' titles, the run tables' pages and the commands' output).
    name: str
    #: Folder of the run folders ``r0001/``, ``r0002/``, ... holding ``RAW-R####-<aggregator>-S#####.h5``.
    raw_root: Path
    #: Where the outputs go: ``<processed_root>/<run>/...`` per run, the event runs' under ``events/``, the run tables under
    #: ``run_table/`` (in-situ samples: ``insitu.processed_root``).
    processed_root: Path
    #: The facility's proc folder of corrected data (``detector.data: corrected``): ``<proc_root>/r0042``
    #: holds ``CORR-R0042-<aggregator>-S#####.h5``; null: ``proc`` beside ``raw_root``.
    proc_root: Path | None = None
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    #: The scan variable of the DSSC runs; null (with frame_pattern) for a beamtime without them.
    scan_variable: ScanVariableConfig | None = None
    #: Frame names repeating within each train; names containing "dark" are dark frames. ``auto``: each frame
    #: pumped, unpumped or dark from the machine's bunch pattern (see ``bunch_pattern``).
    frame_pattern: list[str] | Literal["auto"] | None = Field(default=None, min_length=1)
    #: The timeserver's bunch pattern, for ``frame_pattern: auto``.
    bunch_pattern: BunchPatternConfig | None = None
    framemask: FramemaskConfig = Field(default_factory=FramemaskConfig)
    #: At most this many frames of each train are used; null: all.
    maxframes: int | None = Field(default=None, ge=1)
    #: Run number of the dark run whose per-cell mean is subtracted; null: no dark subtraction.
    dark_run: int | None = Field(default=None, ge=0, le=9999)
    #: Runs that are not data (other dark runs, alignment runs): the sensor and the default
    #: run selection of the commands leave them out, as they leave out the dark run.
    ignore_runs: list[Annotated[int, Field(ge=0, le=9999)]] = Field(default_factory=list)
    #: Optional gain / flat-field map per module; null: none.
    gain_map: GainMapConfig | None = None
    checks: ChecksConfig = Field(default_factory=ChecksConfig)
    #: Frames h5py reads at a time where a module file cannot be memory-mapped (256 raw DSSC frames: 32 MB).
    chunk_frames: int = Field(default=256, ge=1)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    #: When the sensors take a raw run (European XFEL runs).
    completeness: CompletenessConfig = Field(default_factory=CompletenessConfig)
    #: In-situ TIFF series (samples and measurements); null: none in this beamtime.
    insitu: InsituConfig | None = None
    #: Per-event files (PAL-XFEL, LCLS-style); null: none in this beamtime.
    events: EventsConfig | None = None
    #: Per-frame small data of the DSSC runs; null: none.
    smalldata: DsscSmalldataConfig | None = None
    #: Where the heavy assets run: in Dagster's step processes (local) or as SLURM jobs (slurm).
    compute: Literal["local", "slurm"] = "local"
    #: The cluster, for ``compute: slurm``.
    slurm: SlurmConfig | None = None
    #: Python files declaring more workflows through xfel_core.lineage.model (relative to this file):
    #: their assets are processed, versioned and backfilled like the built-in ones.
    workflows: list[Path] = Field(default_factory=list)
    #: A Python file of ``@variable`` functions (xfel_core.variables), relative to this file: per-run
    #: quantities of the beamtime's own, each an asset with its own staleness, in the run tables.
    variables: Path | None = None
    #: The YAML file this came from (set by :func:`load_beamtime`).
    source_file: Path | None = None

    @field_validator("frame_pattern")
    @classmethod
    def _unique_names(cls, v: list[str] | str | None) -> list[str] | str | None:
        if isinstance(v, list) and len(set(v)) != len(v):
            raise ValueError(f"frame names repeat: {v}")
        return v

    @model_validator(mode="after")
    def _dssc_or_insitu(self) -> BeamtimeConfig:
        if (self.scan_variable is None) != (self.frame_pattern is None):
            given, missing = ("scan_variable", "frame_pattern") if self.frame_pattern is None \
                else ("frame_pattern", "scan_variable")
            raise ValueError(f"{missing}: required key is missing ({given} is set; the DSSC runs need both)")
        if self.frame_pattern == "auto" and self.bunch_pattern is None:
            raise ValueError("bunch_pattern: required key is missing (frame_pattern is auto)")
        if self.compute == "slurm" and self.slurm is None:
            raise ValueError("slurm: required key is missing (compute is slurm)")
        if self.scan_variable is None and self.insitu is None and self.events is None:
            raise ValueError("nothing to process: give scan_variable and frame_pattern (DSSC runs), insitu "
                             "or events")
        return self

    @property
    def has_dssc(self) -> bool:
        """True if the beamtime has DSSC runs to reduce (scan_variable and frame_pattern are set)."""
        return self.frame_pattern is not None

    @property
    def frame_types(self) -> list[str]:
        """The frame types of the cube: the frame pattern's names, or with ``auto`` pumped, unpumped and dark."""
        return list(AUTO_FRAME_TYPES) if self.frame_pattern == "auto" else list(self.frame_pattern or [])

    def resolved_max_concurrent(self) -> int:
        """Steps (and Dagster runs) at once: execution.max_concurrent, at least slurm.max_jobs in SLURM mode
        (a step whose work runs as a SLURM job only waits for it)."""
        n = self.execution.resolved_max_concurrent()
        return max(n, self.slurm.max_jobs) if self.compute == "slurm" else n

    def require_dssc(self) -> None:
        if not self.has_dssc:
            raise ConfigError(f"{self.source_file}: the DSSC assets need scan_variable and frame_pattern, "
                              "which this beamtime does not set")

    @property
    def insitu_processed_root(self) -> Path:
        ins = self.require_insitu()
        return ins.processed_root or self.processed_root / "insitu"

    def require_events(self) -> EventsConfig:
        if self.events is None:
            raise ConfigError(f"{self.source_file}: the event assets need an events section, "
                              "which this beamtime does not have")
        return self.events

    def require_insitu(self) -> InsituConfig:
        if self.insitu is None:
            raise ConfigError(f"{self.source_file}: the in-situ assets need an insitu section, "
                              "which this beamtime does not have")
        return self.insitu

    def missing_paths(self) -> tuple[list[str], list[str]]:
        """(fatal, not yet): what this beamtime names that is not there. Fatal: the raw root of its detector
        runs, the dark run, the variables file; not yet: the raw roots of its event runs and in-situ samples
        (a beamtime's later parts, whose folders appear when their data does)."""
        fatal, later = [], []
        if self.has_dssc:
            if not self.raw_root.is_dir():
                fatal.append(f"raw_root {self.raw_root} does not exist")
            elif self.dark_run is not None and not self.run_dir(self.dark_run_key).is_dir():
                fatal.append(f"dark_run: {self.dark_run} has no run folder {self.run_dir(self.dark_run_key)}")
        for name, section in (("events", self.events), ("insitu", self.insitu)):
            if section is not None and not section.raw_root.is_dir():
                later.append(f"{name}.raw_root {section.raw_root} does not exist")
        if self.variables is not None and not Path(self.variables).is_file():
            fatal.append(f"variables: {self.variables} does not exist")
        return fatal, later

    @property
    def module_keys(self) -> list[str]:
        """The static `module` partition keys, "00" ... "15"."""
        return [module_key(m) for m in self.detector.modules]

    @property
    def dark_run_key(self) -> str | None:
        return None if self.dark_run is None else run_key(self.dark_run)

    def run_dir(self, run: str) -> Path:
        """The raw folder of a run (``<raw_root>/r0042``)."""
        return self.raw_root / parse_run_key(run)[1]

    def detector_dir(self, run: str) -> Path:
        """The folder of a run's detector files: the raw folder, or with corrected data its proc folder."""
        if not self.detector.corrected:
            return self.run_dir(run)
        return (self.proc_root or self.raw_root.parent / "proc") / parse_run_key(run)[1]

    def output_dir(self, run: str) -> Path:
        return self.processed_root / parse_run_key(run)[1]

    def output_path(self, run: str, asset: str, module: int | None = None) -> Path:
        """``<processed root>/<run>/<asset>.h5``, or ``<asset>_<module>.h5`` per module."""
        name = asset if module is None else f"{asset}_{module:02d}"
        return self.output_dir(run) / f"{name}.h5"

    def yaml_text(self) -> str:
        """The configuration as YAML, for provenance attributes of the outputs."""
        data = self.model_dump(mode="json", exclude={"source_file"})
        return yaml.safe_dump(data, sort_keys=False)


def run_key(run_number: int) -> str:
    return f"r{int(run_number):04d}"


def module_key(module: int) -> str:
    return f"{int(module):02d}"


def run_module_key(run: str, module: int) -> str:
    """The run x module partition key, as Dagster spells it: ``03|r0002`` (dimensions in name order)."""
    return f"{module_key(module)}|{run}"


def parse_run_key(run: str) -> tuple[int, str]:
    """Validate a run partition key such as ``r0042``; returns (42, "r0042")."""
    m = RUN_KEY_RE.match(run)
    if not m:
        raise ConfigError(f"run key {run!r} is not of the form r0042 (r and four digits)")
    return int(m.group(1)), run


def _format_validation_error(path: Path, err: ValidationError) -> str:
    lines = [f"invalid beamtime configuration {path}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (check the spelling; see README 'Configuration')")
        elif e["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        elif not e["loc"]:  # a rule across keys: its message names them
            lines.append(f"  {e['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def load_beamtime(path: str | os.PathLike) -> BeamtimeConfig:
    """Read and validate a beamtime YAML file; relative paths are resolved against its folder."""
    path = Path(path).resolve()
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"beamtime configuration {path} does not exist (set {ENV_VAR} to its path, "
            "or run 'xfel-assets demo-beamtime DIR' to make a demo)"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"beamtime configuration {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"beamtime configuration {path} must be a mapping of keys, got {type(data).__name__}")
    data = dict(data)
    for key in ("raw_root", "processed_root", "proc_root"):
        if isinstance(data.get(key), str):
            data[key] = str((path.parent / data[key]).resolve())
    gain = data.get("gain_map")
    if isinstance(gain, dict) and isinstance(gain.get("file"), str):
        data["gain_map"] = dict(gain, file=str((path.parent / gain["file"]).resolve()))
    for section in ("insitu", "events", "smalldata"):
        sub = data.get(section)
        if isinstance(sub, dict):
            data[section] = sub = dict(sub)
            for key in ("raw_root", "processed_root", "roi_file"):
                if isinstance(sub.get(key), str):
                    sub[key] = str((path.parent / sub[key]).resolve())
    for section, geometry in ((s, data[s].get("geometry")) for s in ("events", "smalldata") if isinstance(data.get(s), dict)):
        if isinstance(geometry, dict):
            data[section]["geometry"] = geometry = dict(geometry, **{k: str((path.parent / geometry[k]).resolve())
                                                                      for k in ("mask_file", "poni_file")
                                                                      if isinstance(geometry.get(k), str)})
            layout = geometry.get("extra_geom")
            if isinstance(layout, dict) and isinstance(layout.get("geometry_file"), str):
                geometry["extra_geom"] = dict(layout, geometry_file=str((path.parent / layout["geometry_file"]).resolve()))
    if isinstance(data.get("workflows"), list):
        data["workflows"] = [str((path.parent / w).resolve()) if isinstance(w, str) else w for w in data["workflows"]]
    if isinstance(data.get("variables"), str):
        data["variables"] = str((path.parent / data["variables"]).resolve())
    data["source_file"] = str(path)
    try:
        return BeamtimeConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(path, e)) from None


def beamtime_path_from_env() -> Path:
    """The beamtime YAML named by ``XFEL_BEAMTIME``, else the demo's (relative to the cwd)."""
    return Path(os.environ.get(ENV_VAR) or DEFAULT_BEAMTIME).resolve()
