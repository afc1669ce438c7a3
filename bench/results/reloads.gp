set terminal pngcairo size 1400,900 font ",10"
set output 'reloads.png'
set multiplot layout 2,2 title "Node hello server, 2 workers, 32 clients, 10 reloads (dashed: each reload begins)"
set xlabel 'seconds'
set ylabel 'ok per 100 ms'
set y2label 'failed per 100 ms'
set y2range [0:*]
set yrange [0:*]
set ytics nomirror
set y2tics
set key top left
unset arrow
set arrow from 0.54, graph 0 to 0.54, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.15, graph 0 to 1.15, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.77, graph 0 to 1.77, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.39, graph 0 to 2.39, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.00, graph 0 to 3.00, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.61, graph 0 to 3.61, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.23, graph 0 to 4.23, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.84, graph 0 to 4.84, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.47, graph 0 to 5.47, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.11, graph 0 to 6.11, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "baton shared, keep-alive: 0 failed of 46259"
plot 'timeline.dat' index 0 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 0 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.55, graph 0 to 0.55, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.40, graph 0 to 2.40, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.42, graph 0 to 4.42, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.68, graph 0 to 6.68, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 8.91, graph 0 to 8.91, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 10.99, graph 0 to 10.99, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 13.48, graph 0 to 13.48, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 15.27, graph 0 to 15.27, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 17.39, graph 0 to 17.39, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 19.19, graph 0 to 19.19, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "pm2 cluster, keep-alive: 0 failed of 107636"
plot 'timeline.dat' index 1 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 1 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.69, graph 0 to 0.69, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.39, graph 0 to 1.39, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.04, graph 0 to 2.04, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.68, graph 0 to 2.68, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.36, graph 0 to 3.36, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.05, graph 0 to 4.05, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.73, graph 0 to 4.73, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.40, graph 0 to 5.40, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.02, graph 0 to 6.02, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.65, graph 0 to 6.65, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "baton shared, per-request: 0 failed of 14602"
plot 'timeline.dat' index 2 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 2 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.85, graph 0 to 0.85, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.87, graph 0 to 2.87, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.76, graph 0 to 4.76, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.46, graph 0 to 6.46, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 8.21, graph 0 to 8.21, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 10.12, graph 0 to 10.12, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 12.04, graph 0 to 12.04, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 14.12, graph 0 to 14.12, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 15.71, graph 0 to 15.71, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 17.59, graph 0 to 17.59, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "pm2 cluster, per-request: 7 failed of 21792"
plot 'timeline.dat' index 3 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 3 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset multiplot
