"""The ROI window (Qt): draw regions of interest on a sample's frames and backfill what they change."""
