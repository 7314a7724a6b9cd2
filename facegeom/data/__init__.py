"""facegeom.data: the papers' input preprocessing, the skin-attention GMM, augmentation and
dataset readers, each reproducing the authors' arithmetic (PIPELINES.md §1.1, §2.1, §2.6,
§3.1, §4.1, §6.1, §7.1; every function cites its ``repo:path:line``).

Modules:
    deep3d   -- Deep3DFaceRecon ``align_img`` (POS, rescale 102, PIL bicubic, 224 crop), its
                inverse, ``estimate_norm(lm, 224)``.
    arcface  -- insightface ``estimate_norm`` / ``norm_crop`` (Umeyama to the 112 template),
                MICA's ``(x - 127.5) / 127.5`` blob.
    crops    -- RingNet loose crop, 2DASL 120 crop + 18-landmark map, 3DDFA ROI boxes, the
                metrical tracker's crop (bb_scale 2.5, square, 512).
    skin     -- Deep3D's skin-attention GMM.
    augment  -- Deep3D's shift / scale / rotation / flip augmentation (68-point mirror order).
    datasets -- readers for the authors' folder layouts; a bad file is skipped and reported.
    synthetic -- deterministic rendered training samples from the built-in synthetic head.
"""
from facegeom.data import arcface, augment, crops, datasets, deep3d, skin, synthetic
from facegeom.data.arcface import ARCFACE_TEMPLATE, arcface_blob, norm_crop, umeyama
from facegeom.data.augment import MIRROR_68, AffineParams, sample_affine_params
from facegeom.data.crops import (crop_img, ddfa_crop, get_bbox, obtain_18pts_map, parse_roi_box_from_bbox,
                                 parse_roi_box_from_landmark, ringnet_crop, squarefiy, tdasl_input,
                                 tracker_crop)
from facegeom.data.datasets import (Deep3DFlistDataset, FaceImageFolder, collate_skip_failed, read_image,
                                    read_landmarks)
from facegeom.data.deep3d import LM3D_STD, align_img, extract_5p, image_to_original, landmarks_to_original
from facegeom.data.skin import skin_probability, skinmask

__all__ = [
    "arcface", "augment", "crops", "datasets", "deep3d", "skin", "synthetic",
    "ARCFACE_TEMPLATE", "arcface_blob", "norm_crop", "umeyama",
    "MIRROR_68", "AffineParams", "sample_affine_params",
    "crop_img", "ddfa_crop", "get_bbox", "obtain_18pts_map", "parse_roi_box_from_bbox",
    "parse_roi_box_from_landmark", "ringnet_crop", "squarefiy", "tdasl_input", "tracker_crop",
    "Deep3DFlistDataset", "FaceImageFolder", "collate_skip_failed", "read_image", "read_landmarks",
    "LM3D_STD", "align_img", "extract_5p", "image_to_original", "landmarks_to_original",
    "skin_probability", "skinmask",
]
