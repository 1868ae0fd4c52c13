"""Person mattes: which pixels of a frame are the avatar, as an alpha channel (uint8, 255 = person).

- :mod:`engine.matting.model` finds the segmentation model a registry package ships (MediaPipe's
  selfie-segmentation, Apache-2.0) — nothing is downloaded at run time;
- :mod:`engine.matting.segmenter` runs it with OpenCV's TFLite importer and fits the matte to the frame's edges;
- :mod:`engine.matting.temporal` keeps a per-frame matte still where the picture is still (no edge flicker);
- :mod:`engine.matting.stage` adds the matte to any engine's chunks, once, before they reach the frame bus.
"""
