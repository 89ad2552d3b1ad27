"""`xfel-assets roi-gui TARGET`: drag ROIs over the detector image and see their series at once.

pyqtgraph on Qt for Python (PySide6). Left: the image at the slider's position (time or scan
value) with the ROIs as movable, resizable rectangles. Right: the ROI table (name, role, pixel
ranges; name and role editable), the buttons, and which asset partitions the ROIs on screen make
stale. Below: each ROI's quantities (``xfel_core.rois.roi_columns``, as roi_series computes them)
against time or scan value, recomputed live while a ROI moves. Save writes the ROI file that the
pipeline reads (``insitu.roi_file``, ``smalldata.roi_file``, ``events.roi_file``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from xfel_core.config import BeamtimeConfig, Roi
from xfel_core.roi_targets import ImageStack, current_rois, recorded_roi_versions, stale_partitions
from xfel_core.rois import dump_rois, load_rois, roi_columns

#: The columns roi_columns gives each role (``<name>_<suffix>``; ``net`` only with a background ROI).
ROLE_COLUMNS = {"com": ["com_y", "com_x"], "fwhm": ["fwhm_y", "fwhm_x"], "intensity": ["sum", "net"],
                "background": ["mean"]}
ROLES = list(ROLE_COLUMNS)
COLOURS = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf", "#999999"]
pg.setConfigOptions(imageAxisOrder="row-major", antialias=True)


class RoiWindow(QtWidgets.QMainWindow):
    """The ROI window over one image stack; ``roi_file`` is where Save writes."""

    def __init__(self, cfg: BeamtimeConfig, stack: ImageStack, roi_file: Path):
        super().__init__()
        self.cfg, self.stack, self.roi_file = cfg, stack, Path(roi_file)
        self.setWindowTitle(f"xfel-assets ROIs — {stack.title}")
        self._items: list[pg.RectROI] = []
        self._rois: list[Roi] = []
        self._syncing = False
        #: The ROI version each existing output that reads the ROI file was computed with.
        self._recorded = recorded_roi_versions(cfg, self.roi_file)

        # Image with a slider along the stack's axis.
        self.image_plot = pg.PlotWidget()
        self.image_plot.setAspectLocked(True)
        self.image_plot.invertY(True)
        self.image_plot.setLabel("left", "y (pixel)")
        self.image_plot.setLabel("bottom", "x (pixel)")
        self.image_item = pg.ImageItem(colorMap=pg.colormap.get("viridis"))
        self.image_plot.addItem(self.image_item)
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.slider.setRange(0, len(stack.axis) - 1)
        self.slider.valueChanged.connect(self._show_image)
        self.slider_label = QtWidgets.QLabel()

        # ROI table and actions.
        self.table = QtWidgets.QTableWidget(0, 6)
        self.table.setHorizontalHeaderLabels(["name", "role", "y from", "y to", "x from", "x to"])
        self.table.itemChanged.connect(self._table_edited)
        buttons = QtWidgets.QHBoxLayout()
        for text, slot in (("Add ROI", self._add_clicked), ("Remove", self._remove_clicked),
                           ("Load…", self._load_clicked), ("Save", self.save)):
            b = QtWidgets.QPushButton(text)
            b.clicked.connect(slot)
            buttons.addWidget(b)
        self.request_button = QtWidgets.QPushButton("Request materialization of the stale partitions")
        self.request_button.clicked.connect(self._request_clicked)
        self.status = QtWidgets.QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)

        # Series of every ROI quantity: one plot per ROI (own y scale), x axes linked.
        self.series_view = pg.GraphicsLayoutWidget()
        self._plots: list[tuple[tuple[str, str], pg.PlotItem, pg.InfiniteLine]] = []
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.table.horizontalHeader().setSectionResizeMode(QtWidgets.QHeaderView.ResizeMode.Stretch)

        side = QtWidgets.QVBoxLayout()
        side.addWidget(QtWidgets.QLabel(f"ROI file: {self.roi_file}"))
        side.addWidget(self.table)
        side.addLayout(buttons)
        side.addWidget(self.request_button)
        side.addWidget(self.status)
        left = QtWidgets.QVBoxLayout()
        left.addWidget(self.image_plot)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.slider)
        row.addWidget(self.slider_label)
        left.addLayout(row)
        top = QtWidgets.QHBoxLayout()
        top.addLayout(left, 3)
        top.addLayout(side, 2)
        splitter = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        top_widget = QtWidgets.QWidget()
        top_widget.setLayout(top)
        splitter.addWidget(top_widget)
        splitter.addWidget(self.series_view)
        splitter.setSizes([520, 480])
        self.setCentralWidget(splitter)
        self.resize(1300, 1000)

        lo, hi = np.nanpercentile(stack.images, [1, 99.9])
        self._levels = (float(lo), float(hi) if hi > lo else float(lo) + 1)
        self._show_image(0)
        self.set_rois(current_rois(cfg, stack.section, self.roi_file))

    # --- the ROIs ---------------------------------------------------------------------------
    @property
    def rois(self) -> list[Roi]:
        return list(self._rois)

    def set_rois(self, rois: list[Roi]) -> None:
        """Replace the ROIs on screen."""
        for item in self._items:
            self.image_plot.removeItem(item)
        self._items, self._rois = [], []
        self._syncing = True
        self.table.setRowCount(0)
        self._syncing = False
        for r in rois:
            self.add_roi(r.name, r.role, r.y, r.x)
        self._update_series()

    def add_roi(self, name: str, role: str, y: tuple[int, int], x: tuple[int, int]) -> pg.RectROI:
        """A new rectangle ROI over rows y[0]:y[1] and columns x[0]:x[1] (clipped to the image)."""
        roi = self._clipped(Roi(name=name, role=role, y=y, x=x))
        colour = COLOURS[len(self._items) % len(COLOURS)]
        item = pg.RectROI((roi.x[0], roi.y[0]), (roi.x[1] - roi.x[0], roi.y[1] - roi.y[0]),
                          pen=pg.mkPen(colour, width=2), snapSize=1.0, translateSnap=True, scaleSnap=True,
                          maxBounds=QtCore.QRectF(0, 0, self.stack.shape[1], self.stack.shape[0]))
        item.sigRegionChanged.connect(self._item_moved)
        self.image_plot.addItem(item)
        self._items.append(item)
        self._rois.append(roi)
        self._syncing = True
        row = self.table.rowCount()
        self.table.insertRow(row)
        self.table.setItem(row, 0, QtWidgets.QTableWidgetItem(roi.name))
        combo = QtWidgets.QComboBox()
        combo.addItems(ROLES)
        combo.setCurrentText(roi.role)
        combo.currentTextChanged.connect(lambda text, it=item: self._role_changed(it, text))
        self.table.setCellWidget(row, 1, combo)
        self._fill_row(row, roi)
        self._syncing = False
        self._update_series()
        return item

    def roi_item(self, name: str) -> pg.RectROI:
        return self._items[[r.name for r in self._rois].index(name)]

    def remove_roi(self, name: str) -> None:
        i = [r.name for r in self._rois].index(name)
        self.image_plot.removeItem(self._items.pop(i))
        self._rois.pop(i)
        self.table.removeRow(i)
        self._update_series()

    def _clipped(self, roi: Roi) -> Roi:
        ny, nx = self.stack.shape
        y0, y1 = max(0, min(roi.y[0], ny - 1)), max(1, min(roi.y[1], ny))
        x0, x1 = max(0, min(roi.x[0], nx - 1)), max(1, min(roi.x[1], nx))
        return roi.model_copy(update={"y": (y0, max(y1, y0 + 1)), "x": (x0, max(x1, x0 + 1))})

    def _fill_row(self, row: int, roi: Roi) -> None:
        for col, v in enumerate((roi.y[0], roi.y[1], roi.x[0], roi.x[1]), start=2):
            cell = QtWidgets.QTableWidgetItem(str(v))
            cell.setFlags(cell.flags() & ~QtCore.Qt.ItemFlag.ItemIsEditable)
            self.table.setItem(row, col, cell)

    def _item_moved(self, item: pg.RectROI) -> None:
        i = self._items.index(item)
        (x0, y0), (w, h) = item.pos(), item.size()
        y = (int(round(y0)), int(round(y0 + h)))
        x = (int(round(x0)), int(round(x0 + w)))
        self._rois[i] = self._clipped(Roi(name=self._rois[i].name, role=self._rois[i].role, y=y, x=x))
        self._syncing = True
        self._fill_row(i, self._rois[i])
        self._syncing = False
        self._update_series()

    def _role_changed(self, item: pg.RectROI, role: str) -> None:
        i = self._items.index(item)
        self._rois[i] = self._rois[i].model_copy(update={"role": role})
        self._update_series()

    def _table_edited(self, cell: QtWidgets.QTableWidgetItem) -> None:
        if self._syncing or cell.column() != 0:
            return
        i, name = cell.row(), cell.text().strip()
        taken = {r.name for j, r in enumerate(self._rois) if j != i}
        try:
            if not name or name in taken:
                raise ValueError(f"ROI names must be unique and not empty: {name!r}")
            self._rois[i] = Roi(name=name, role=self._rois[i].role, y=self._rois[i].y, x=self._rois[i].x)
        except ValueError as e:
            self._syncing = True
            cell.setText(self._rois[i].name)
            self._syncing = False
            self.status.setText(f"not renamed: {e}")
            return
        self._update_series()

    # --- image and series -------------------------------------------------------------------
    def _show_image(self, index: int) -> None:
        self.image_item.setImage(self.stack.images[index], levels=getattr(self, "_levels", None))
        value = float(self.stack.axis[index])
        self.slider_label.setText(f"{index + 1}/{len(self.stack.axis)}: {value:g}")
        for _, _, cursor in getattr(self, "_plots", []):
            cursor.setValue(value)

    def series(self) -> dict[str, np.ndarray]:
        """Each ROI quantity per image, as roi_series computes it from these images."""
        return roi_columns(self.stack.images, self._rois) if self._rois else {}

    def _rebuild_plots(self) -> None:
        self.series_view.clear()
        self._plots, self.curves = [], {}
        value = float(self.stack.axis[self.slider.value()])
        if not self._rois:
            self.series_view.addLabel(f"Add a ROI to see its values against {self.stack.axis_label}.")
        ncols = 1 if len(self._rois) < 3 else 2
        for i, r in enumerate(self._rois):
            plot = self.series_view.addPlot(row=i // ncols, col=i % ncols)
            plot.setLabel("left", f"{r.name} ({r.role})")
            plot.showGrid(x=True, y=True, alpha=0.3)
            plot.addLegend(offset=(-10, 5))
            if i >= len(self._rois) - ncols:
                plot.setLabel("bottom", self.stack.axis_label)
            if self._plots:
                plot.setXLink(self._plots[0][1])
            cursor = pg.InfiniteLine(value, angle=90, pen=pg.mkPen("#888", style=QtCore.Qt.PenStyle.DashLine))
            plot.addItem(cursor)
            self._plots.append(((r.name, r.role), plot, cursor))

    def _update_series(self) -> None:
        if [key for key, _, _ in self._plots] != [(r.name, r.role) for r in self._rois]:
            self._rebuild_plots()
        columns = self.series()
        for (name, role), plot, _ in self._plots:
            mine = [f"{name}_{suffix}" for suffix in ROLE_COLUMNS[role] if f"{name}_{suffix}" in columns]
            for k, col in enumerate(mine):
                if col not in self.curves:
                    colour = COLOURS[k % len(COLOURS)]
                    self.curves[col] = plot.plot(name=col, pen=pg.mkPen(colour, width=1.5), symbol="o",
                                                 symbolSize=4, symbolBrush=colour)
                self.curves[col].setData(self.stack.axis, columns[col])
        self._show_stale()

    # --- ROI file and the pipeline ----------------------------------------------------------
    def stale(self) -> dict[str, list[str]]:
        """Asset partitions whose outputs were computed with other ROIs than those on screen."""
        return stale_partitions(self._recorded, self._rois)

    def _show_stale(self) -> None:
        stale = self.stale()
        reads = getattr(self.cfg, self.stack.section, None)
        if reads is None or reads.roi_file is None or Path(reads.roi_file).resolve() != self.roi_file.resolve():
            self.status.setText(f"The pipeline does not read this file yet: set {self.stack.section}.roi_file: "
                                f"{self.roi_file} in {self.cfg.source_file}.")
        elif stale:
            lines = [f"{asset}: {', '.join(keys)}" for asset, keys in stale.items()]
            self.status.setText("These ROIs make stale (once saved):\n" + "\n".join(lines))
        else:
            self.status.setText("Every output that reads these ROIs is up to date.")
        self.request_button.setEnabled(bool(stale))

    def changeEvent(self, event) -> None:  # Qt's name
        """Coming back to the window: re-read the outputs' ROI versions (a backfill may have run)."""
        if event.type() == QtCore.QEvent.Type.ActivationChange and self.isActiveWindow():
            self._recorded = recorded_roi_versions(self.cfg, self.roi_file)
            self._show_stale()
        super().changeEvent(event)

    def save(self) -> Path:
        """Write the ROIs to the ROI file (atomically; the pipeline reads it)."""
        path = dump_rois(self.roi_file, self._rois, detector_shape=self.stack.shape)
        self.status.setText(f"saved {len(self._rois)} ROIs to {path}\n" + self.status.text())
        return path

    def load(self, path: Path) -> None:
        self.set_rois(load_rois(Path(path)))

    def request_materialization(self) -> str:
        """Save, then launch a Dagster asset backfill of exactly the stale partitions; returns its id."""
        import dagster as dg

        import xfel_assets.cli.backfill as bf
        from xfel_assets.runtime.graphql import GraphQL

        stale = self.stale()
        if not stale:
            raise RuntimeError("nothing is stale")
        self.save()
        home = Path(os.environ["DAGSTER_HOME"])
        with dg.DagsterInstance.get() as instance, GraphQL(instance, home / "workspace.yaml") as gql:
            backfill_id = bf.launch(gql, stale, f"ROIs changed in {self.roi_file.name}")
        self.status.setText(f"launched asset backfill {backfill_id} of "
                            + ", ".join(f"{a} x {len(k)}" for a, k in stale.items())
                            + " (the Dagster daemon runs it: make ui, or `xfel-assets backfill` running)")
        return backfill_id

    def _add_clicked(self) -> None:
        ny, nx = self.stack.shape
        names = {r.name for r in self._rois}
        n = next(i for i in range(1, 1000) if f"roi{i}" not in names)
        self.add_roi(f"roi{n}", "intensity", (ny // 4, ny // 4 + max(2, ny // 8)), (nx // 4, nx // 4 + max(2, nx // 8)))

    def _remove_clicked(self) -> None:
        rows = sorted({i.row() for i in self.table.selectedIndexes()}, reverse=True)
        for row in rows:
            self.remove_roi(self._rois[row].name)

    def _load_clicked(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Load ROIs", str(self.roi_file.parent), "ROI files (*.yaml *.yml)")
        if path:
            self.load(Path(path))

    def _request_clicked(self) -> None:
        try:
            self.request_materialization()
        except Exception as e:  # shown, not raised: the window stays usable
            self.status.setText(f"not launched: {e}")


def run_window(cfg: BeamtimeConfig, stack: ImageStack, roi_file: Path) -> int:
    """Open the window and run Qt's event loop until it is closed."""
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    window = RoiWindow(cfg, stack, roi_file)
    window.show()
    return app.exec()
