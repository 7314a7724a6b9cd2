"""Transcriptions of the authors' arithmetic (and of OpenCV's / skimage's), written
independently of facegeom.data in plain numpy / PIL / loops, for the tests to compare against.

Sources (PIPELINES.md commits): D3D:util/preprocess.py:24-46,143-228;
D3D:data/base_dataset.py:77-131; D3D:util/skin_mask.py:9-108; RN:util/image.py:28-62,
RN:demo.py:102-120; 2DASL:test_codes/benchmark_0resnet50_4chls_FAN2d_18pts_1998.py:140-154,209-210;
3DDFA:utils/inference.py:20-93; MT:image.py:22-57; skimage _umeyama; insightface
face_align.py:11-30; OpenCV resize.cpp / imgwarp.cpp (4.x).
"""
import math

import numpy as np
from PIL import Image

BICUBIC = Image.Resampling.BICUBIC


# ---------------------------------------------------------------- Deep3D
def d3d_POS(xp, x):
    npts = xp.shape[1]
    A = np.zeros([2 * npts, 8])
    A[0:2 * npts - 1:2, 0:3] = x.transpose()
    A[0:2 * npts - 1:2, 3] = 1
    A[1:2 * npts:2, 4:7] = x.transpose()
    A[1:2 * npts:2, 7] = 1
    b = np.reshape(xp.transpose(), [2 * npts, 1])
    k, _, _, _ = np.linalg.lstsq(A, b, rcond=None)
    R1 = k[0:3]
    R2 = k[4:7]
    sTx = k[3]
    sTy = k[7]
    s = (np.linalg.norm(R1) + np.linalg.norm(R2)) / 2
    t = np.stack([sTx, sTy], axis=0)
    return t, s


def d3d_extract_5p(lm):
    lm_idx = np.array([31, 37, 40, 43, 46, 49, 55]) - 1
    lm5p = np.stack([lm[lm_idx[0], :], np.mean(lm[lm_idx[[1, 2]], :], 0), np.mean(
        lm[lm_idx[[3, 4]], :], 0), lm[lm_idx[5], :], lm[lm_idx[6], :]], axis=0)
    return lm5p[[1, 2, 0, 3, 4], :]


def d3d_resize_n_crop_img(img, lm, t, s, target_size=224., mask=None):
    w0, h0 = img.size
    w = (w0 * s).astype(np.int32)
    h = (h0 * s).astype(np.int32)
    left = (w / 2 - target_size / 2 + float((t[0] - w0 / 2) * s)).astype(np.int32)
    right = left + target_size
    up = (h / 2 - target_size / 2 + float((h0 / 2 - t[1]) * s)).astype(np.int32)
    below = up + target_size
    img = img.resize((w, h), resample=BICUBIC)
    img = img.crop((left, up, right, below))
    if mask is not None:
        mask = mask.resize((w, h), resample=BICUBIC)
        mask = mask.crop((left, up, right, below))
    lm = np.stack([lm[:, 0] - t[0] + w0 / 2, lm[:, 1] - t[1] + h0 / 2], axis=1) * s
    lm = lm - np.reshape(np.array([(w / 2 - target_size / 2), (h / 2 - target_size / 2)]), [1, 2])
    return img, lm, mask


def d3d_align_img(img, lm, lm3D, mask=None, target_size=224., rescale_factor=102.):
    w0, h0 = img.size
    lm5p = d3d_extract_5p(lm) if lm.shape[0] != 5 else lm
    t, s = d3d_POS(lm5p.transpose(), lm3D.transpose())
    s = rescale_factor / s
    t = t.reshape(2)   # numpy >= 2 refuses float() of a (1,) array; values unchanged
    img_new, lm_new, mask_new = d3d_resize_n_crop_img(img, lm, t, s, target_size=target_size, mask=mask)
    trans_params = np.array([w0, h0, s, t[0], t[1]])
    return trans_params, img_new, lm_new, mask_new


def d3d_estimate_norm(lm_68p, H):
    lm = d3d_extract_5p(lm_68p)
    lm[:, -1] = H - 1 - lm[:, -1]
    src = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                    [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
    M = sk_umeyama(lm, src.astype(np.float64))
    if np.linalg.det(M) == 0:
        M = np.eye(3)
    return M[0:2, :]


def d3d_get_affine_mat(w, h, shift_x, shift_y, scale, rot_angle, flip):
    rot_rad = -rot_angle * np.pi / 180
    shift_to_origin = np.array([1, 0, -w // 2, 0, 1, -h // 2, 0, 0, 1]).reshape([3, 3])
    flip_mat = np.array([-1 if flip else 1, 0, 0, 0, 1, 0, 0, 0, 1]).reshape([3, 3])
    shift_mat = np.array([1, 0, shift_x, 0, 1, shift_y, 0, 0, 1]).reshape([3, 3])
    rot_mat = np.array([np.cos(rot_rad), np.sin(rot_rad), 0, -np.sin(rot_rad), np.cos(rot_rad), 0, 0, 0, 1]).reshape([3, 3])
    scale_mat = np.array([scale, 0, 0, 0, scale, 0, 0, 0, 1]).reshape([3, 3])
    shift_to_center = np.array([1, 0, w // 2, 0, 1, h // 2, 0, 0, 1]).reshape([3, 3])
    affine = shift_to_center @ scale_mat @ rot_mat @ shift_mat @ flip_mat @ shift_to_origin
    return affine, np.linalg.inv(affine), flip


def d3d_apply_lm_affine(landmark, affine, flip, size):
    _, h = size
    lm = landmark.copy()
    lm[:, 1] = h - 1 - lm[:, 1]
    lm = np.concatenate((lm, np.ones([lm.shape[0], 1])), -1)
    lm = lm @ np.transpose(affine)
    lm[:, :2] = lm[:, :2] / lm[:, 2:]
    lm = lm[:, :2]
    lm[:, 1] = h - 1 - lm[:, 1]
    if flip:
        lm_ = lm.copy()
        lm_[:17] = lm[16::-1]
        lm_[17:22] = lm[26:21:-1]
        lm_[22:27] = lm[21:16:-1]
        lm_[31:36] = lm[35:30:-1]
        lm_[36:40] = lm[45:41:-1]
        lm_[40:42] = lm[47:45:-1]
        lm_[42:46] = lm[39:35:-1]
        lm_[46:48] = lm[41:39:-1]
        lm_[48:55] = lm[54:47:-1]
        lm_[55:60] = lm[59:54:-1]
        lm_[60:65] = lm[64:59:-1]
        lm_[65:68] = lm[67:64:-1]
        lm = lm_
    return lm


# ---------------------------------------------------------------- skin (D3D:util/skin_mask.py)
skin_w = [0.24063933, 0.16365987, 0.26034665, 0.33535415]
skin_mu = [np.array([113.71862, 103.39613, 164.08226]), np.array([150.19858, 105.18467, 155.51428]),
           np.array([183.92976, 107.62468, 152.71820]), np.array([114.90524, 113.59782, 151.38217])]
skin_cov_det = [5692842.5, 5851930.5, 2329131., 1585971.]
skin_cov_inv = [np.array([[0.0019472069, 0.0020450759, -0.00060243998], [0.0020450759, 0.017700525, 0.0051420014], [-0.00060243998, 0.0051420014, 0.0081308950]]),
                np.array([[0.0027110141, 0.0011036990, 0.0023122299], [0.0011036990, 0.010707724, 0.010742856], [0.0023122299, 0.010742856, 0.017481629]]),
                np.array([[0.0048026871, 0.00022935172, 0.0077668377], [0.00022935172, 0.011729696, 0.0081661865], [0.0077668377, 0.0081661865, 0.025374353]]),
                np.array([[0.0011989699, 0.0022453172, -0.0010748957], [0.0022453172, 0.047758564, 0.020332102], [-0.0010748957, 0.020332102, 0.024502251]])]
nonskin_w = [0.12791070, 0.31130761, 0.34245777, 0.21832393]
nonskin_mu = [np.array([99.200851, 112.07533, 140.20602]), np.array([110.91392, 125.52969, 130.19237]),
              np.array([129.75864, 129.96107, 126.96808]), np.array([112.29587, 128.85121, 129.05431])]
nonskin_cov_det = [458703648., 6466488., 90611376., 133097.63]
nonskin_cov_inv = [np.array([[0.00085371657, 0.00071197288, 0.00023958916], [0.00071197288, 0.0025935620, 0.00076557708], [0.00023958916, 0.00076557708, 0.0015042332]]),
                   np.array([[0.00024650150, 0.00045542428, 0.00015019422], [0.00045542428, 0.026412144, 0.018419769], [0.00015019422, 0.018419769, 0.037497383]]),
                   np.array([[0.00037054974, 0.00038146760, 0.00040408765], [0.00038146760, 0.0085505722, 0.0079136286], [0.00040408765, 0.0079136286, 0.010982352]]),
                   np.array([[0.00013709733, 0.00051228428, 0.00012777430], [0.00051228428, 0.28237113, 0.10528370], [0.00012777430, 0.10528370, 0.23468947]])]


def _likelihood(data, w, mu, cov_det, cov_inv):
    N = data.shape[0]
    lh = np.zeros(N)
    for i in range(4):
        factor = (2 * math.pi) ** (3 / 2) * cov_det[i] ** 0.5
        data_ = data - mu[i]
        tmp = np.sum(np.matmul(data_, cov_inv[i]) * data_, axis=1)
        power = -0.5 * tmp
        p = np.array([math.exp(power[j]) for j in range(N)]) / factor
        lh += p * w[i]
    return lh


def d3d_skinmask(imbgr):
    rgb = imbgr[..., ::-1]
    m = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112], [112, -93.786, -18.214]])
    shape = rgb.shape
    ycbcr = np.dot(rgb.reshape((shape[0] * shape[1], 3)), m.transpose() / 255.)
    ycbcr[:, 0] += 16.
    ycbcr[:, 1:] += 128.
    data = ycbcr
    tmp1 = 0.8 * _likelihood(data, skin_w, skin_mu, skin_cov_det, skin_cov_inv)
    tmp2 = (1 - 0.8) * _likelihood(data, nonskin_w, nonskin_mu, nonskin_cov_det, nonskin_cov_inv)
    post = (tmp1 / (tmp1 + tmp2)).reshape((shape[0], shape[1]))
    post = np.round(post * 255).astype(np.uint8)
    return post, np.tile(np.expand_dims(post, 2), [1, 1, 3])


# ---------------------------------------------------------------- skimage _umeyama
def sk_umeyama(src, dst, estimate_scale=True):
    num, dim = src.shape
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_demean = src - src_mean
    dst_demean = dst - dst_mean
    A = dst_demean.T @ src_demean / num
    d = np.ones((dim,), dtype=np.float64)
    if np.linalg.det(A) < 0:
        d[dim - 1] = -1
    T = np.eye(dim + 1, dtype=np.float64)
    U, S, V = np.linalg.svd(A)
    rank = np.linalg.matrix_rank(A)
    if rank == 0:
        return np.nan * T
    elif rank == dim - 1:
        if np.linalg.det(U) * np.linalg.det(V) > 0:
            T[:dim, :dim] = U @ V
        else:
            s = d[dim - 1]
            d[dim - 1] = -1
            T[:dim, :dim] = U @ np.diag(d) @ V
            d[dim - 1] = s
    else:
        T[:dim, :dim] = U @ np.diag(d) @ V
    scale = 1.0 / src_demean.var(axis=0).sum() * (S @ d) if estimate_scale else 1.0
    T[:dim, dim] = dst_mean - scale * (T[:dim, :dim] @ src_mean.T)
    T[:dim, :dim] *= scale
    return T


def if_estimate_norm(lmk, image_size=112):
    arcface_dst = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                            [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)
    if image_size % 112 == 0:
        ratio = float(image_size) / 112.0
        diff_x = 0
    else:
        ratio = float(image_size) / 128.0
        diff_x = 8.0 * ratio
    dst = arcface_dst * ratio
    dst[:, 0] += diff_x
    return sk_umeyama(np.asarray(lmk, np.float64), dst.astype(np.float64))[0:2, :]


# ---------------------------------------------------------------- OpenCV 4.x, per pixel
def cv_resize_loop(img, dsize, cubic=False):
    """cv2.resize per output pixel, float result (before the integer rounding)."""
    H, W = img.shape[:2]
    w, h = dsize
    out = np.zeros((h, w) + img.shape[2:])
    A = -0.75

    def taps(d, n_src, n_dst):
        f = (d + 0.5) * (n_src / n_dst) - 0.5
        if not cubic:
            s = math.floor(f)
            fr = f - s
            if s < 0:
                s, fr = 0, 0.0
            if s >= n_src - 1:
                s, fr = n_src - 1, 0.0
            return [(s, 1 - fr), (min(s + 1, n_src - 1), fr)]
        s = math.floor(f)
        x = f - s
        c0 = ((A * (x + 1) - 5 * A) * (x + 1) + 8 * A) * (x + 1) - 4 * A
        c1 = ((A + 2) * x - (A + 3)) * x * x + 1
        c2 = ((A + 2) * (1 - x) - (A + 3)) * (1 - x) * (1 - x) + 1
        c3 = 1 - c0 - c1 - c2
        return [(min(max(s + k, 0), n_src - 1), c) for k, c in zip((-1, 0, 1, 2), (c0, c1, c2, c3))]

    for y in range(h):
        ty = taps(y, H, h)
        for x in range(w):
            tx = taps(x, W, w)
            out[y, x] = sum(wy * wx * img[sy, sx].astype(np.float64) for sy, wy in ty for sx, wx in tx)
    return out


def cv_warp_affine_loop(img, M, dsize, quantize=True):
    """cv2.warpAffine bilinear, BORDER_CONSTANT 0, per output pixel, float result."""
    M = np.asarray(M, np.float64)
    D = M[0, 0] * M[1, 1] - M[0, 1] * M[1, 0]
    D = 1.0 / D if D != 0 else 0.0
    A11, A22, A12, A21 = M[1, 1] * D, M[0, 0] * D, -M[0, 1] * D, -M[1, 0] * D
    b1 = -A11 * M[0, 2] - A12 * M[1, 2]
    b2 = -A21 * M[0, 2] - A22 * M[1, 2]
    H, W = img.shape[:2]
    w, h = dsize
    out = np.zeros((h, w) + img.shape[2:])
    for y in range(h):
        for x in range(w):
            if quantize:   # imgwarp.cpp WarpAffineInvoker: AB_BITS 10, INTER_BITS 5, round_delta 16
                X = (int(np.rint(A11 * x * 1024)) + int(np.rint((A12 * y + b1) * 1024)) + 16) >> 5
                Y = (int(np.rint(A21 * x * 1024)) + int(np.rint((A22 * y + b2) * 1024)) + 16) >> 5
                sx, sy, fx, fy = X >> 5, Y >> 5, (X & 31) / 32, (Y & 31) / 32
            else:
                X, Y = A11 * x + A12 * y + b1, A21 * x + A22 * y + b2
                sx, sy = math.floor(X), math.floor(Y)
                fx, fy = X - sx, Y - sy
            v = 0.0
            for yy, wy in ((sy, 1 - fy), (sy + 1, fy)):
                for xx, wx in ((sx, 1 - fx), (sx + 1, fx)):
                    if 0 <= xx < W and 0 <= yy < H:
                        v = v + wy * wx * img[yy, xx].astype(np.float64)
            out[y, x] = v
    return out


# ---------------------------------------------------------------- RingNet (resize passed in)
def rn_preprocess(img, resize, img_size=224):
    if np.max(img.shape[:2]) != img_size:
        scale = (float(img_size) / np.max(img.shape[:2]))
    else:
        scale = 1.0
    center = np.round(np.array(img.shape[:2]) / 2).astype(int)
    center = center[::-1]
    new_size = (np.floor(np.array(img.shape[0:2]) * scale)).astype(int)
    new_img = resize(img, (new_size[1], new_size[0]))
    actual_factor = [new_size[0] / float(img.shape[0]), new_size[1] / float(img.shape[1])]
    scale_factors = [actual_factor[1], actual_factor[0]]
    center_scaled = np.round(center * scale_factors).astype(int)
    margin = int(img_size / 2)
    image_pad = np.pad(new_img, ((margin, ), (margin, ), (0, )), mode='edge')
    center_pad = center_scaled + margin
    start_pt = center_pad - margin
    end_pt = center_pad + margin
    crop = image_pad[start_pt[1]:end_pt[1], start_pt[0]:end_pt[0], :]
    return 2 * ((crop / 255.) - 0.5), start_pt, end_pt


# ---------------------------------------------------------------- 2DASL / 3DDFA
def tdasl_map(pts68):
    pts68 = np.array(pts68, dtype=np.float32)
    pts68[pts68 > 119] = 119
    _18 = [17, 19, 21, 22, 24, 26, 36, 40, 39, 42, 46, 45, 31, 30, 35, 48, 66, 54]
    lms2d = pts68[:, _18]
    lms2d[:, 7] = (pts68[:, 37] + pts68[:, 40]) / 2
    lms2d[:, 10] = (pts68[:, 43] + pts68[:, 46]) / 2
    lms2d[:, 16] = (pts68[:, 62] + pts68[:, 66]) / 2
    ptsMap = np.zeros([120, 120]) - 1
    indx = np.int32(np.floor(lms2d))
    ptsMap[indx[1], indx[0]] = 1
    return ptsMap


def ddfa_crop_img(img, roi_box):
    h, w = img.shape[:2]
    sx, sy, ex, ey = [int(round(_)) for _ in roi_box]
    dh, dw = ey - sy, ex - sx
    res = np.zeros((dh, dw, 3), dtype=np.uint8)
    if sx < 0:
        sx, dsx = 0, -sx
    else:
        dsx = 0
    if ex > w:
        ex, dex = w, dw - (ex - w)
    else:
        dex = dw
    if sy < 0:
        sy, dsy = 0, -sy
    else:
        dsy = 0
    if ey > h:
        ey, dey = h, dh - (ey - h)
    else:
        dey = dh
    res[dsy:dey, dsx:dex] = img[sy:ey, sx:ex]
    return res


def ddfa_roi_from_landmark(pts):
    bbox = [min(pts[0, :]), min(pts[1, :]), max(pts[0, :]), max(pts[1, :])]
    center = [(bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2]
    radius = max(bbox[2] - bbox[0], bbox[3] - bbox[1]) / 2
    bbox = [center[0] - radius, center[1] - radius, center[0] + radius, center[1] + radius]
    llength = math.sqrt((bbox[2] - bbox[0]) ** 2 + (bbox[3] - bbox[1]) ** 2)
    center_x = (bbox[2] + bbox[0]) / 2
    center_y = (bbox[3] + bbox[1]) / 2
    roi_box = [0] * 4
    roi_box[0] = center_x - llength / 2
    roi_box[1] = center_y - llength / 2
    roi_box[2] = roi_box[0] + llength
    roi_box[3] = roi_box[1] + llength
    return roi_box


def ddfa_roi_from_bbox(bbox):
    left, top, right, bottom = bbox
    old_size = (right - left + bottom - top) / 2
    center_x = right - (right - left) / 2.0
    center_y = bottom - (bottom - top) / 2.0 + old_size * 0.14
    size = int(old_size * 1.58)
    roi_box = [0] * 4
    roi_box[0] = center_x - size / 2
    roi_box[1] = center_y - size / 2
    roi_box[2] = roi_box[0] + size
    roi_box[3] = roi_box[1] + size
    return roi_box


# ---------------------------------------------------------------- metrical tracker
def mt_get_bbox(image, lmks, bb_scale=2.0):
    h, w, c = image.shape
    lmks = lmks.astype(np.int32)
    x_min, x_max, y_min, y_max = np.min(lmks[:, 0]), np.max(lmks[:, 0]), np.min(lmks[:, 1]), np.max(lmks[:, 1])
    x_center, y_center = int((x_max + x_min) / 2.0), int((y_max + y_min) / 2.0)
    size = int(bb_scale * 2 * max(x_center - x_min, y_center - y_min))
    xb_min, xb_max, yb_min, yb_max = max(x_center - size // 2, 0), min(x_center + size // 2, w - 1), \
        max(y_center - size // 2, 0), min(y_center + size // 2, h - 1)
    yb_max = min(yb_max, h - 1)
    xb_max = min(xb_max, w - 1)
    yb_min = max(yb_min, 0)
    xb_min = max(xb_min, 0)
    if (xb_max - xb_min) % 2 != 0:
        xb_min += 1
    if (yb_max - yb_min) % 2 != 0:
        yb_min += 1
    return np.array([xb_min, xb_max, yb_min, yb_max])


def mt_crop_image(image, x_min, y_min, x_max, y_max):
    return image[max(y_min, 0):min(y_max, image.shape[0] - 1), max(x_min, 0):min(x_max, image.shape[1] - 1), :]


def mt_pad_square(image):
    h, w, c = image.shape
    if w != h:
        max_wh = max(w, h)
        hp = int((max_wh - w) / 2)
        vp = int((max_wh - h) / 2)
        image = np.pad(image, [(vp, vp), (hp, hp), (0, 0)], mode='constant')
    return image
