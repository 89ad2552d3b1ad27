"""`python -m xfel_assets.daemon run -w workspace.yaml`, the command users and our backfills start; it lives in :mod:`xfel_assets.runtime.daemon`."""

from xfel_assets.runtime.daemon import main

if __name__ == "__main__":
    main()
