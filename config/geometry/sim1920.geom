; CrystFEL geometry written by photonflow.io.geom.write_geometry
; 64 panels, slab 1920 (ss) x 1920 (fs) pixels
photon_energy = 9500
peak_list = /entry_1/result_1

res = 13333.333333333334
clen = 0.1
coffset = 0
adu_per_photon = 1
data = /entry_1/data_1/data
dim0 = %
dim1 = ss
dim2 = fs

p0/min_fs = 0
p0/max_fs = 239
p0/min_ss = 0
p0/max_ss = 239
p0/corner_x = -977.8
p0/corner_y = -978.1
p0/fs = +1x +0y
p0/ss = +0x +1y

p1/min_fs = 240
p1/max_fs = 479
p1/min_ss = 0
p1/max_ss = 239
p1/corner_x = -733.8
p1/corner_y = -978.1
p1/fs = +1x +0y
p1/ss = +0x +1y

p2/min_fs = 480
p2/max_fs = 719
p2/min_ss = 0
p2/max_ss = 239
p2/corner_x = -489.8
p2/corner_y = -978.1
p2/fs = +1x +0y
p2/ss = +0x +1y

p3/min_fs = 720
p3/max_fs = 959
p3/min_ss = 0
p3/max_ss = 239
p3/corner_x = -245.8
p3/corner_y = -978.1
p3/fs = +1x +0y
p3/ss = +0x +1y

p4/min_fs = 960
p4/max_fs = 1199
p4/min_ss = 0
p4/max_ss = 239
p4/corner_x = -1.8
p4/corner_y = -978.1
p4/fs = +1x +0y
p4/ss = +0x +1y

p5/min_fs = 1200
p5/max_fs = 1439
p5/min_ss = 0
p5/max_ss = 239
p5/corner_x = 242.2
p5/corner_y = -978.1
p5/fs = +1x +0y
p5/ss = +0x +1y

p6/min_fs = 1440
p6/max_fs = 1679
p6/min_ss = 0
p6/max_ss = 239
p6/corner_x = 486.2
p6/corner_y = -978.1
p6/fs = +1x +0y
p6/ss = +0x +1y

p7/min_fs = 1680
p7/max_fs = 1919
p7/min_ss = 0
p7/max_ss = 239
p7/corner_x = 730.2
p7/corner_y = -978.1
p7/fs = +1x +0y
p7/ss = +0x +1y

p8/min_fs = 0
p8/max_fs = 239
p8/min_ss = 240
p8/max_ss = 479
p8/corner_x = -977.8
p8/corner_y = -734.1
p8/fs = +1x +0y
p8/ss = +0x +1y

p9/min_fs = 240
p9/max_fs = 479
p9/min_ss = 240
p9/max_ss = 479
p9/corner_x = -733.8
p9/corner_y = -734.1
p9/fs = +1x +0y
p9/ss = +0x +1y

p10/min_fs = 480
p10/max_fs = 719
p10/min_ss = 240
p10/max_ss = 479
p10/corner_x = -489.8
p10/corner_y = -734.1
p10/fs = +1x +0y
p10/ss = +0x +1y

p11/min_fs = 720
p11/max_fs = 959
p11/min_ss = 240
p11/max_ss = 479
p11/corner_x = -245.8
p11/corner_y = -734.1
p11/fs = +1x +0y
p11/ss = +0x +1y

p12/min_fs = 960
p12/max_fs = 1199
p12/min_ss = 240
p12/max_ss = 479
p12/corner_x = -1.8
p12/corner_y = -734.1
p12/fs = +1x +0y
p12/ss = +0x +1y

p13/min_fs = 1200
p13/max_fs = 1439
p13/min_ss = 240
p13/max_ss = 479
p13/corner_x = 242.2
p13/corner_y = -734.1
p13/fs = +1x +0y
p13/ss = +0x +1y

p14/min_fs = 1440
p14/max_fs = 1679
p14/min_ss = 240
p14/max_ss = 479
p14/corner_x = 486.2
p14/corner_y = -734.1
p14/fs = +1x +0y
p14/ss = +0x +1y

p15/min_fs = 1680
p15/max_fs = 1919
p15/min_ss = 240
p15/max_ss = 479
p15/corner_x = 730.2
p15/corner_y = -734.1
p15/fs = +1x +0y
p15/ss = +0x +1y

p16/min_fs = 0
p16/max_fs = 239
p16/min_ss = 480
p16/max_ss = 719
p16/corner_x = -977.8
p16/corner_y = -490.1
p16/fs = +1x +0y
p16/ss = +0x +1y

p17/min_fs = 240
p17/max_fs = 479
p17/min_ss = 480
p17/max_ss = 719
p17/corner_x = -733.8
p17/corner_y = -490.1
p17/fs = +1x +0y
p17/ss = +0x +1y

p18/min_fs = 480
p18/max_fs = 719
p18/min_ss = 480
p18/max_ss = 719
p18/corner_x = -489.8
p18/corner_y = -490.1
p18/fs = +1x +0y
p18/ss = +0x +1y

p19/min_fs = 720
p19/max_fs = 959
p19/min_ss = 480
p19/max_ss = 719
p19/corner_x = -245.8
p19/corner_y = -490.1
p19/fs = +1x +0y
p19/ss = +0x +1y

p20/min_fs = 960
p20/max_fs = 1199
p20/min_ss = 480
p20/max_ss = 719
p20/corner_x = -1.8
p20/corner_y = -490.1
p20/fs = +1x +0y
p20/ss = +0x +1y

p21/min_fs = 1200
p21/max_fs = 1439
p21/min_ss = 480
p21/max_ss = 719
p21/corner_x = 242.2
p21/corner_y = -490.1
p21/fs = +1x +0y
p21/ss = +0x +1y

p22/min_fs = 1440
p22/max_fs = 1679
p22/min_ss = 480
p22/max_ss = 719
p22/corner_x = 486.2
p22/corner_y = -490.1
p22/fs = +1x +0y
p22/ss = +0x +1y

p23/min_fs = 1680
p23/max_fs = 1919
p23/min_ss = 480
p23/max_ss = 719
p23/corner_x = 730.2
p23/corner_y = -490.1
p23/fs = +1x +0y
p23/ss = +0x +1y

p24/min_fs = 0
p24/max_fs = 239
p24/min_ss = 720
p24/max_ss = 959
p24/corner_x = -977.8
p24/corner_y = -246.1
p24/fs = +1x +0y
p24/ss = +0x +1y

p25/min_fs = 240
p25/max_fs = 479
p25/min_ss = 720
p25/max_ss = 959
p25/corner_x = -733.8
p25/corner_y = -246.1
p25/fs = +1x +0y
p25/ss = +0x +1y

p26/min_fs = 480
p26/max_fs = 719
p26/min_ss = 720
p26/max_ss = 959
p26/corner_x = -489.8
p26/corner_y = -246.1
p26/fs = +1x +0y
p26/ss = +0x +1y

p27/min_fs = 720
p27/max_fs = 959
p27/min_ss = 720
p27/max_ss = 959
p27/corner_x = -245.8
p27/corner_y = -246.1
p27/fs = +1x +0y
p27/ss = +0x +1y

p28/min_fs = 960
p28/max_fs = 1199
p28/min_ss = 720
p28/max_ss = 959
p28/corner_x = -1.8
p28/corner_y = -246.1
p28/fs = +1x +0y
p28/ss = +0x +1y

p29/min_fs = 1200
p29/max_fs = 1439
p29/min_ss = 720
p29/max_ss = 959
p29/corner_x = 242.2
p29/corner_y = -246.1
p29/fs = +1x +0y
p29/ss = +0x +1y

p30/min_fs = 1440
p30/max_fs = 1679
p30/min_ss = 720
p30/max_ss = 959
p30/corner_x = 486.2
p30/corner_y = -246.1
p30/fs = +1x +0y
p30/ss = +0x +1y

p31/min_fs = 1680
p31/max_fs = 1919
p31/min_ss = 720
p31/max_ss = 959
p31/corner_x = 730.2
p31/corner_y = -246.1
p31/fs = +1x +0y
p31/ss = +0x +1y

p32/min_fs = 0
p32/max_fs = 239
p32/min_ss = 960
p32/max_ss = 1199
p32/corner_x = -977.8
p32/corner_y = -2.1
p32/fs = +1x +0y
p32/ss = +0x +1y

p33/min_fs = 240
p33/max_fs = 479
p33/min_ss = 960
p33/max_ss = 1199
p33/corner_x = -733.8
p33/corner_y = -2.1
p33/fs = +1x +0y
p33/ss = +0x +1y

p34/min_fs = 480
p34/max_fs = 719
p34/min_ss = 960
p34/max_ss = 1199
p34/corner_x = -489.8
p34/corner_y = -2.1
p34/fs = +1x +0y
p34/ss = +0x +1y

p35/min_fs = 720
p35/max_fs = 959
p35/min_ss = 960
p35/max_ss = 1199
p35/corner_x = -245.8
p35/corner_y = -2.1
p35/fs = +1x +0y
p35/ss = +0x +1y

p36/min_fs = 960
p36/max_fs = 1199
p36/min_ss = 960
p36/max_ss = 1199
p36/corner_x = -1.8
p36/corner_y = -2.1
p36/fs = +1x +0y
p36/ss = +0x +1y

p37/min_fs = 1200
p37/max_fs = 1439
p37/min_ss = 960
p37/max_ss = 1199
p37/corner_x = 242.2
p37/corner_y = -2.1
p37/fs = +1x +0y
p37/ss = +0x +1y

p38/min_fs = 1440
p38/max_fs = 1679
p38/min_ss = 960
p38/max_ss = 1199
p38/corner_x = 486.2
p38/corner_y = -2.1
p38/fs = +1x +0y
p38/ss = +0x +1y

p39/min_fs = 1680
p39/max_fs = 1919
p39/min_ss = 960
p39/max_ss = 1199
p39/corner_x = 730.2
p39/corner_y = -2.1
p39/fs = +1x +0y
p39/ss = +0x +1y

p40/min_fs = 0
p40/max_fs = 239
p40/min_ss = 1200
p40/max_ss = 1439
p40/corner_x = -977.8
p40/corner_y = 241.9
p40/fs = +1x +0y
p40/ss = +0x +1y

p41/min_fs = 240
p41/max_fs = 479
p41/min_ss = 1200
p41/max_ss = 1439
p41/corner_x = -733.8
p41/corner_y = 241.9
p41/fs = +1x +0y
p41/ss = +0x +1y

p42/min_fs = 480
p42/max_fs = 719
p42/min_ss = 1200
p42/max_ss = 1439
p42/corner_x = -489.8
p42/corner_y = 241.9
p42/fs = +1x +0y
p42/ss = +0x +1y

p43/min_fs = 720
p43/max_fs = 959
p43/min_ss = 1200
p43/max_ss = 1439
p43/corner_x = -245.8
p43/corner_y = 241.9
p43/fs = +1x +0y
p43/ss = +0x +1y

p44/min_fs = 960
p44/max_fs = 1199
p44/min_ss = 1200
p44/max_ss = 1439
p44/corner_x = -1.8
p44/corner_y = 241.9
p44/fs = +1x +0y
p44/ss = +0x +1y

p45/min_fs = 1200
p45/max_fs = 1439
p45/min_ss = 1200
p45/max_ss = 1439
p45/corner_x = 242.2
p45/corner_y = 241.9
p45/fs = +1x +0y
p45/ss = +0x +1y

p46/min_fs = 1440
p46/max_fs = 1679
p46/min_ss = 1200
p46/max_ss = 1439
p46/corner_x = 486.2
p46/corner_y = 241.9
p46/fs = +1x +0y
p46/ss = +0x +1y

p47/min_fs = 1680
p47/max_fs = 1919
p47/min_ss = 1200
p47/max_ss = 1439
p47/corner_x = 730.2
p47/corner_y = 241.9
p47/fs = +1x +0y
p47/ss = +0x +1y

p48/min_fs = 0
p48/max_fs = 239
p48/min_ss = 1440
p48/max_ss = 1679
p48/corner_x = -977.8
p48/corner_y = 485.9
p48/fs = +1x +0y
p48/ss = +0x +1y

p49/min_fs = 240
p49/max_fs = 479
p49/min_ss = 1440
p49/max_ss = 1679
p49/corner_x = -733.8
p49/corner_y = 485.9
p49/fs = +1x +0y
p49/ss = +0x +1y

p50/min_fs = 480
p50/max_fs = 719
p50/min_ss = 1440
p50/max_ss = 1679
p50/corner_x = -489.8
p50/corner_y = 485.9
p50/fs = +1x +0y
p50/ss = +0x +1y

p51/min_fs = 720
p51/max_fs = 959
p51/min_ss = 1440
p51/max_ss = 1679
p51/corner_x = -245.8
p51/corner_y = 485.9
p51/fs = +1x +0y
p51/ss = +0x +1y

p52/min_fs = 960
p52/max_fs = 1199
p52/min_ss = 1440
p52/max_ss = 1679
p52/corner_x = -1.8
p52/corner_y = 485.9
p52/fs = +1x +0y
p52/ss = +0x +1y

p53/min_fs = 1200
p53/max_fs = 1439
p53/min_ss = 1440
p53/max_ss = 1679
p53/corner_x = 242.2
p53/corner_y = 485.9
p53/fs = +1x +0y
p53/ss = +0x +1y

p54/min_fs = 1440
p54/max_fs = 1679
p54/min_ss = 1440
p54/max_ss = 1679
p54/corner_x = 486.2
p54/corner_y = 485.9
p54/fs = +1x +0y
p54/ss = +0x +1y

p55/min_fs = 1680
p55/max_fs = 1919
p55/min_ss = 1440
p55/max_ss = 1679
p55/corner_x = 730.2
p55/corner_y = 485.9
p55/fs = +1x +0y
p55/ss = +0x +1y

p56/min_fs = 0
p56/max_fs = 239
p56/min_ss = 1680
p56/max_ss = 1919
p56/corner_x = -977.8
p56/corner_y = 729.9
p56/fs = +1x +0y
p56/ss = +0x +1y

p57/min_fs = 240
p57/max_fs = 479
p57/min_ss = 1680
p57/max_ss = 1919
p57/corner_x = -733.8
p57/corner_y = 729.9
p57/fs = +1x +0y
p57/ss = +0x +1y

p58/min_fs = 480
p58/max_fs = 719
p58/min_ss = 1680
p58/max_ss = 1919
p58/corner_x = -489.8
p58/corner_y = 729.9
p58/fs = +1x +0y
p58/ss = +0x +1y

p59/min_fs = 720
p59/max_fs = 959
p59/min_ss = 1680
p59/max_ss = 1919
p59/corner_x = -245.8
p59/corner_y = 729.9
p59/fs = +1x +0y
p59/ss = +0x +1y

p60/min_fs = 960
p60/max_fs = 1199
p60/min_ss = 1680
p60/max_ss = 1919
p60/corner_x = -1.8
p60/corner_y = 729.9
p60/fs = +1x +0y
p60/ss = +0x +1y

p61/min_fs = 1200
p61/max_fs = 1439
p61/min_ss = 1680
p61/max_ss = 1919
p61/corner_x = 242.2
p61/corner_y = 729.9
p61/fs = +1x +0y
p61/ss = +0x +1y

p62/min_fs = 1440
p62/max_fs = 1679
p62/min_ss = 1680
p62/max_ss = 1919
p62/corner_x = 486.2
p62/corner_y = 729.9
p62/fs = +1x +0y
p62/ss = +0x +1y

p63/min_fs = 1680
p63/max_fs = 1919
p63/min_ss = 1680
p63/max_ss = 1919
p63/corner_x = 730.2
p63/corner_y = 729.9
p63/fs = +1x +0y
p63/ss = +0x +1y

bad_beamstop/min_x = -8
bad_beamstop/max_x = 8
bad_beamstop/min_y = -8
bad_beamstop/max_y = 8
