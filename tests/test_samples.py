"""Sample media made from a real face photo (``fer_utils.samples``): the sample photo and the
test clip, written as a video and read back."""

import numpy as np

from fer_utils import media, samples


def test_the_sample_photo_is_the_astronaut():
    from skimage import data

    photo = samples.astronaut()
    assert photo.shape == (512, 512, 3) and photo.dtype == np.uint8 and photo.flags.c_contiguous
    np.testing.assert_array_equal(photo, data.astronaut())


def test_test_clip_frames_and_file(tmp_path):
    path = tmp_path / "clip.mp4"
    frames = samples.make_test_clip(8, size=(320, 240), no_face_frames=2, path=path,
                                    fer_faces=np.full((2, 48, 48), 128, np.uint8))
    assert len(frames) == 8 and frames[0].shape == (240, 320, 3) and frames[0].dtype == np.uint8
    assert np.array_equal(frames[0], frames[1]) and not np.array_equal(frames[1], frames[2])
    assert len(media.read_video(path)) == 8
    assert list(samples.clip_schedule(8, 2, no_face_frames=2)) == [-1, -1, 0, 0, 0, 1, 1, 1]
