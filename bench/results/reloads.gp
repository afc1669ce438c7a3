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
set arrow from 0.53, graph 0 to 0.53, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.12, graph 0 to 1.12, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.74, graph 0 to 1.74, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.36, graph 0 to 2.36, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.94, graph 0 to 2.94, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.55, graph 0 to 3.55, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.16, graph 0 to 4.16, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.76, graph 0 to 4.76, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.37, graph 0 to 5.37, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.00, graph 0 to 6.00, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "baton shared, keep-alive: 0 failed of 52291"
plot 'timeline.dat' index 0 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 0 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.56, graph 0 to 0.56, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.89, graph 0 to 2.89, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.57, graph 0 to 4.57, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.94, graph 0 to 6.94, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 8.75, graph 0 to 8.75, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 10.63, graph 0 to 10.63, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 12.89, graph 0 to 12.89, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 15.05, graph 0 to 15.05, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 17.14, graph 0 to 17.14, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 19.05, graph 0 to 19.05, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "pm2 cluster, keep-alive: 0 failed of 110434"
plot 'timeline.dat' index 1 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 1 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.67, graph 0 to 0.67, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 1.35, graph 0 to 1.35, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.01, graph 0 to 2.01, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.65, graph 0 to 2.65, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.27, graph 0 to 3.27, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 3.91, graph 0 to 3.91, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.55, graph 0 to 4.55, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.18, graph 0 to 5.18, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 5.79, graph 0 to 5.79, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.42, graph 0 to 6.42, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "baton shared, per-request: 0 failed of 15966"
plot 'timeline.dat' index 2 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 2 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset arrow
set arrow from 0.85, graph 0 to 0.85, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 2.75, graph 0 to 2.75, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 4.87, graph 0 to 4.87, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 6.43, graph 0 to 6.43, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 8.29, graph 0 to 8.29, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 9.96, graph 0 to 9.96, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 11.67, graph 0 to 11.67, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 13.26, graph 0 to 13.26, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 15.01, graph 0 to 15.01, graph 1 nohead lc rgb '#bbbbbb' dt 2
set arrow from 16.46, graph 0 to 16.46, graph 1 nohead lc rgb '#bbbbbb' dt 2
set title "pm2 cluster, per-request: 7 failed of 24301"
plot 'timeline.dat' index 3 using 1:2 with steps lc rgb '#2a7f2a' title 'ok per 100 ms', '' index 3 using 1:3 axes x1y2 with impulses lw 3 lc rgb '#d62728' title 'failed per 100 ms'
unset multiplot
