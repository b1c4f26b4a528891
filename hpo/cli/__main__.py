from hpo.cli._main import main

main()
